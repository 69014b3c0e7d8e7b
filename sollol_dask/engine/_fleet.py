"""Fleet membership: which nodes take work now, and which join, leave or come back.

``Fleet`` checks every node once (describe it, choose the run's reference: dimension,
digest, norm), admits the nodes that match, warms cold ones before they get batches,
excludes unfit ones for good, and supervises the rest: ejected and quarantined nodes
are re-probed when due and restored when they answer. The balancer (``policy``) holds
each node's state; this object does the I/O around it through the endpoints.

Exclusions are logged (INFO) at once and, when the fleet ``announce``s, their warnings
kept for the caller's thread (``take_warnings``): a warning raised on the event-loop
thread reaches no caller. Routers on Dask workers do not announce: the client's router
warns once per run, and the run's report names each node's state and reason, instead of
every worker repeating the same line.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable

from .._exceptions import ModelNotFoundError, NoNodeAvailableError, SollolError
from .._node import Node
from .._outcome import Failure
from .._settings import RouterSettings
from ..policy._balancer import Health, SlotBalancer
from ..policy._identity import NodeInfo, Reference, choose_reference, mismatch
from ..policy._limits import clip
from ._endpoint import Endpoint
from ._slots import SlotSource
from ._tasks import BackgroundTasks

logger = logging.getLogger(__name__)
SUPERVISE_EVERY = 0.1  # seconds between checks for due probes and the all-down deadline


class Fleet:
    def __init__(self, settings: RouterSettings, balancer: SlotBalancer,
                 endpoints: dict[str, Endpoint], slots: SlotSource, tasks: BackgroundTasks, *,
                 clock: Callable[[], float],
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 announce: bool = True) -> None:
        self.settings = settings
        self.announce = announce  # warn the caller (False on workers: the client does)
        self.nodes: dict[str, Node] = {n.name: n for n in settings.nodes}
        self.balancer = balancer
        self.endpoints = endpoints
        self.slots = slots
        self.clock = clock
        self.sleep = sleep
        self.infos: dict[str, NodeInfo] = {}
        self.reference: Reference | None = None
        self._tasks = tasks
        self._ready: asyncio.Future | None = None
        self._supervisor: asyncio.Task | None = None
        self._all_down_since: float | None = None
        self._warnings: collections.deque[str] = collections.deque()  # for the caller's thread

    # -- the run's reference -------------------------------------------------------------

    async def ready(self) -> Reference:
        """The run's reference, checking the fleet first if that has not succeeded yet."""
        if self._ready is None or (self._ready.done() and self._ready.exception() is not None):
            self._ready = asyncio.ensure_future(self._check())
        return await asyncio.shield(self._ready)

    async def _check(self) -> Reference:
        names = list(self.nodes)
        results = await asyncio.gather(*(self.endpoints[n].describe() for n in names),
                                       return_exceptions=True)
        for name, result in zip(names, results):
            if isinstance(result, BaseException):
                self.probe_failed(name, result, "fleet check")
            else:
                self.infos[name] = result
        self.reference = choose_reference(names, self.infos)
        if self.reference is None:
            missing = [r for r in results if isinstance(r, ModelNotFoundError)]
            if missing and len(missing) == len(results):
                model = self.settings.opts.model
                if any(self.nodes[n].api != "ollama" for n in names):  # each its own fix
                    raise ModelNotFoundError(
                        f"model {model!r} is on none of the nodes: "
                        + "; ".join(clip(str(m)) for m in missing), node=names[0])
                raise ModelNotFoundError(
                    f"model {model!r} is on none of the nodes ({', '.join(names)}): run "
                    f"`ollama pull {model}` on them, or check the model name", node=names[0])
            raise self.no_node_error()
        for name, info in self.infos.items():
            self.admit(name, info)
        if not self.balancer.has_usable_node():
            raise self.no_node_error()
        if self._supervisor is None:
            self._supervisor = self._tasks.spawn(
                self._tasks.every(SUPERVISE_EVERY, self.supervise, "fleet supervisor"),
                "fleet supervisor")
        return self.reference

    def admit(self, name: str, info: NodeInfo) -> bool:
        """Let a described node take work if it matches the fleet; exclude it if not."""
        why = mismatch(info, self.reference, self.settings.opts.model)
        if why is not None:
            self.exclude(name, why)
            return False
        node = self.nodes[name]
        if node.max_inflight is None and info.total_slots:
            self.balancer.set_cap(name, info.total_slots)
        if info.loaded is False and self.endpoints[name].can_warm:
            self.balancer.warming(name)
            self._tasks.spawn(self._warm(name), f"warm-up of {name}")
            return False
        return True

    async def _warm(self, name: str) -> None:
        """Load a cold node's model before it gets batches (its load must not stall a
        partition), then let it join."""
        try:
            await self.endpoints[name].warm()
        except Exception as err:  # whatever it is, the node is not ready: never escapes
            self.probe_failed(name, err, "warm-up")
        else:
            logger.info("node %s has loaded %s", name, self.settings.opts.model)
            self.balancer.probe_result(name, True)
        self.slots.wake()

    # -- nodes joining during a run -----------------------------------------------------

    def add(self, node: Node, endpoint: Endpoint, cap: int) -> bool:
        """A node found during the run (discovery): no work until ``join`` checked it
        (model, digest, dimension; warmed if cold). False if it is known already."""
        if node.name in self.nodes:
            return False
        self.nodes[node.name] = node
        self.endpoints[node.name] = endpoint
        self.balancer.add_node(node.name, cap, node.weight)
        if self.reference is not None or self._ready is not None:
            self.balancer.checking(node.name)
            self._tasks.spawn(self.join(node.name), f"check of joining node {node.name}")
        return True

    async def join(self, name: str) -> None:
        """Check a joining node against the run's reference, then let it take work."""
        try:
            await self.ready()
        except Exception:  # the fleet check failed: it runs again, with this node in it
            return
        if name in self.infos:  # the fleet check that just ran included it
            return
        logger.info("node %s joined; checking it", name)
        await self.reprobe(name)

    # -- nodes leaving -------------------------------------------------------------------

    def no_node_error(self) -> NoNodeAvailableError:
        reasons = {s.name: f"{s.health.value}: {s.reason}" for s in self.balancer.nodes.values()}
        listing = "; ".join(f"{k} ({v})" for k, v in reasons.items())
        return NoNodeAvailableError(
            f"no node can embed with {self.settings.opts.model!r}: {listing}. Start or fix a "
            "node and run again (embed_parquet resumes where it stopped)",
            reasons,
        )

    def exclude(self, name: str, reason: str) -> None:
        """``name`` cannot serve this run (other model, digest, dimension, credentials)."""
        reason = clip(reason)
        if self.balancer.nodes[name].health is not Health.EXCLUDED:
            logger.info("node %s excluded: %s", name, reason)
            if self.announce:
                self._warnings.append(f"node {name} excluded: {reason}")
        self.balancer.exclude(name, reason)
        self.fail_if_none_usable()

    def take_warnings(self) -> list[str]:
        """Exclusions not yet warned about (called from the caller's thread)."""
        taken = []
        while self._warnings:
            taken.append(self._warnings.popleft())
        return taken

    def fail_if_none_usable(self) -> None:
        """Batches waiting for a slot fail at once when no node can take them any more
        (all excluded or quarantined); else they look again."""
        if not self.balancer.has_usable_node():
            self.slots.fail_waiters(self.no_node_error())
        else:
            self.slots.wake()

    async def wait_for_up_node(self) -> None:
        """Return once a node is up; raise when none can be, or none came in time."""
        down_since = self._all_down_since or self.clock()
        while not self.balancer.any_up():
            if not self.balancer.has_usable_node() or \
                    self.clock() - down_since >= self.settings.wait_for_nodes:
                raise self.no_node_error()
            await self.sleep(SUPERVISE_EVERY)

    def probe_failed(self, name: str, err: BaseException, what: str) -> None:
        """A fleet check, warm-up or re-probe of ``name`` failed: exclude the node if it
        cannot serve the run, count a strike for a bad answer, else eject it (re-probed
        after a back-off). Every exception ends here, so none escapes a task."""
        failure = getattr(err, "failure", None)
        text = f"{what} failed: {clip(err)}"
        if isinstance(err, ModelNotFoundError) or failure in (Failure.NODE_FATAL, Failure.CALLER):
            self.exclude(name, str(err))
            return
        if failure is Failure.BAD_RESPONSE:
            self.balancer.strike(name, text)
        else:
            if not isinstance(err, SollolError):  # a bug of ours: its traceback, once
                self._tasks.report_bug(f"{what} of node {name}", err)
            elif what == "fleet check":
                logger.log(logging.WARNING if self.announce else logging.INFO,
                           "node %s is not answering (%s); it will be re-probed",
                           name, clip(err))
            self.balancer.probe_result(name, False, text)
        self.fail_if_none_usable()

    # -- nodes coming back ---------------------------------------------------------------

    def supervise(self) -> None:
        """Re-probe ejected nodes when due; fail waiting batches if all stay down."""
        for name in self.balancer.due_probes():
            self._tasks.spawn(self.reprobe(name), f"re-probe of {name}")
        if self.balancer.end_pauses():
            self.slots.wake()  # a node that asked for a pause takes work again
        if self.balancer.any_up():
            self._all_down_since = None
        else:
            now = self.clock()
            self._all_down_since = self._all_down_since or now
            if now - self._all_down_since >= self.settings.wait_for_nodes:
                self.slots.fail_waiters(self.no_node_error())

    async def reprobe(self, name: str) -> None:
        try:
            info = await self.endpoints[name].describe()
        except Exception as err:  # HTML from a proxy, a bug: a failed probe, never lost
            self.probe_failed(name, err, "probe")
            return
        self.infos[name] = info
        if self.reference is None:
            self.reference = choose_reference(list(self.nodes), self.infos)
        if self.admit(name, info):
            logger.info("node %s answers again; restored", name)
            self.balancer.probe_result(name, True)
        self.slots.wake()

    async def aclose(self) -> None:
        if self._ready is not None and not self._ready.done():
            self._ready.cancel()
            await asyncio.gather(self._ready, return_exceptions=True)
