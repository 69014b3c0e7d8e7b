"""Where a router gets its slots: from its own balancer, or from the cluster's broker.

A slot is the right to have one request in flight on one node. ``LocalSlots`` hands out
the slots of this process's balancer to waiting batches, those of the oldest job first
(then first come, first served): jobs (partitions) then finish one after another, and
the next one is already waiting for slots when one ends, instead of all running jobs
advancing together, ending together and leaving the nodes idle while Dask starts the
next tasks. On a Dask cluster
every worker has its own router, and per-worker caps would put W x cap requests on one
Ollama node; so there ``BrokerSlots`` asks the ``SlotBroker`` (a SchedulerPlugin running
the same pure balancer over the whole cluster) for a lease per batch. The router keeps
its own balancer for what each worker sees (health, speed, timeouts) and tells the broker
which nodes it cannot use.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import itertools
import logging
import time
from collections.abc import Callable

from distributed.diagnostics.plugin import SchedulerPlugin

from ._balancer import Health, SlotBalancer
from ._outcome import CANCELLED, Failure, Outcome

logger = logging.getLogger(__name__)
BROKER_NAME = "sollol-dask-slots"
_BROKER_WAIT = 5.0  # a lease request waits at most this long, then the worker re-checks


@dataclasses.dataclass(frozen=True)
class Grant:
    node: str
    lease: int | None = None  # the broker's lease id; None for local slots
    # Other requests were still waiting for a slot when this one was granted: there is
    # work elsewhere, so this slot must not be spent on a hedge copy.
    contended: bool = False


class LocalSlots:
    """Slots of this process's balancer, handed to waiters oldest job first."""

    def __init__(self, balancer: SlotBalancer) -> None:
        self.balancer = balancer
        # (spare, job priority, arrival, future, nodes to avoid), kept sorted
        self._waiters: list[tuple[bool, float, int, asyncio.Future, frozenset[str]]] = []
        self._arrivals = itertools.count()

    async def acquire(self, avoid: frozenset[str], priority: float = 0.0,
                      spare: bool = False) -> Grant:
        """A slot; ``spare``: for a hedge copy, served only after every other request."""
        future = asyncio.get_running_loop().create_future()
        bisect.insort(self._waiters, (spare, priority, next(self._arrivals), future, avoid))
        self.wake()
        try:
            node = await future
            return Grant(node, contended=self.waiting)
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and future.exception() is None:
                self.balancer.settle(future.result(), CANCELLED)
                self.wake()
            raise

    def release(self, grant: Grant, outcome: Outcome) -> None:
        self.balancer.settle(grant.node, outcome)
        self.wake()

    def wake(self) -> None:
        """Hand free slots to waiting batches, oldest job first."""
        kept = []
        for i, entry in enumerate(self._waiters):
            future, avoid = entry[3], entry[4]
            if future.done():
                continue
            name = self.balancer.choose(avoid)
            if name is None:
                kept.append(entry)
                if not self.balancer.has_free_slot():
                    kept.extend(self._waiters[i + 1:])
                    break
                continue
            future.set_result(name)
        self._waiters = kept

    def fail_waiters(self, error: Exception) -> None:
        waiters, self._waiters = self._waiters, []
        for entry in waiters:
            if not entry[3].done():
                entry[3].set_exception(error)

    @property
    def waiting(self) -> bool:
        """Requests for new work are waiting (spare ones for hedge copies do not count)."""
        return any(not entry[0] and not entry[3].done() for entry in self._waiters)


class BrokerSlots:
    """Leases from the cluster's ``SlotBroker``; ``call(handler, **kw)`` reaches the
    scheduler (an awaitable on the router's loop)."""

    def __init__(self, balancer: SlotBalancer, call: Callable, worker: str,
                 caps: Callable[[], dict[str, int]]) -> None:
        self.balancer = balancer
        self._call = call
        self._worker = worker
        self._caps = caps

    async def acquire(self, avoid: frozenset[str], priority: float = 0.0,
                      spare: bool = False) -> Grant | None:
        """A lease, or None when none came within the broker's wait (the router then
        checks its nodes and asks again)."""
        while True:
            unusable = self.balancer.unusable()  # down, quarantined or asked for a pause
            request = asyncio.ensure_future(self._call(
                "sollol_slots_acquire", worker=self._worker, nodes=self._caps(),
                avoid=sorted(avoid), unusable=unusable, timeout=_BROKER_WAIT,
                priority=priority, spare=spare))
            try:
                granted = await asyncio.shield(request)
            except asyncio.CancelledError:
                # Let the request finish and give back what it brings: no leaked lease.
                request.add_done_callback(self._return_unused)
                raise
            if not granted:
                return None
            grant = Grant(granted["node"], granted["lease"], granted.get("contended", False))
            known = self.balancer.nodes.get(grant.node)
            if known is None or known.health is not Health.UP:
                self._send_release(grant, CANCELLED)
                continue
            self.balancer.note_acquired(grant.node)
            return grant

    def release(self, grant: Grant, outcome: Outcome) -> None:
        try:
            self.balancer.settle(grant.node, outcome)
        finally:
            self._send_release(grant, outcome)  # the lease goes back whatever happens here

    def _send_release(self, grant: Grant, outcome: Outcome) -> None:
        message = {"lease": grant.lease, "texts": outcome.texts, "seconds": outcome.seconds,
                   "failure": outcome.failure and outcome.failure.value}
        task = asyncio.ensure_future(self._call("sollol_slots_release", worker=self._worker,
                                                leases=[message]))
        task.add_done_callback(_log_failure)

    def _return_unused(self, request: asyncio.Future) -> None:
        if request.cancelled() or request.exception() is not None or not request.result():
            return
        granted = request.result()
        self._send_release(Grant(granted["node"], granted["lease"]), CANCELLED)

    def wake(self) -> None:  # the broker wakes its own waiters
        pass

    def fail_waiters(self, error: Exception) -> None:
        pass

    @property
    def waiting(self) -> bool:
        return False


def _log_failure(task: asyncio.Future) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("could not return a slot lease to the scheduler: %s", task.exception())


class SlotBroker(SchedulerPlugin):
    """Cluster-wide per-node slots on the scheduler: caps hold across all workers.

    Handlers: ``sollol_slots_acquire`` (waits up to ``timeout`` for a lease on the best
    free node; the oldest job's requests first, then first come, first served, across all
    workers; "spare" requests, for hedge copies, only when no other request wants the
    slot) and ``sollol_slots_release``. Leases of a worker that
    leaves the cluster are taken back. Node health is each worker's business: workers
    pass the nodes they cannot use.
    """

    name = BROKER_NAME
    idempotent = True

    async def start(self, scheduler) -> None:
        self.balancer = SlotBalancer([], [], clock=time.monotonic, eject_after=2**31)
        # (spare, job priority, arrival, future, worker, nodes to avoid, nodes banned), sorted
        self.waiters: list[tuple] = []
        self._arrivals = itertools.count()
        self.leases: dict[int, tuple[str, str]] = {}  # lease -> (worker, node)
        # Workers that left: a request of theirs still waiting here (its handler outlives
        # the dead connection) must not be granted a lease nobody would give back.
        self.gone: set[str] = set()
        self._ids = itertools.count(1)
        scheduler.handlers["sollol_slots_acquire"] = self.acquire
        scheduler.handlers["sollol_slots_release"] = self.release
        scheduler.handlers["sollol_slots_state"] = self.state

    async def acquire(self, worker: str, nodes: dict[str, int], avoid=(), unusable=(),
                      timeout: float = _BROKER_WAIT, priority: float = 0.0,
                      spare: bool = False) -> dict | None:
        for name, cap in nodes.items():
            self.balancer.add_node(name, cap)
        # Several configurations share the broker (caps belong to nodes, not to runs):
        # grant only among the nodes this router uses.
        banned = frozenset(unusable) | (frozenset(self.balancer.nodes) - frozenset(nodes))
        future = asyncio.get_running_loop().create_future()
        entry = (bool(spare), priority, next(self._arrivals), future, worker,
                 frozenset(avoid), banned)
        bisect.insort(self.waiters, entry)
        self._dispatch()
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except asyncio.TimeoutError:
            if future.done() and future.exception() is None:
                return future.result()
            future.cancel()
            if entry in self.waiters:
                self.waiters.remove(entry)
            return None

    def release(self, worker: str, leases: list[dict]) -> None:
        for item in leases:
            entry = self.leases.pop(item["lease"], None)
            if entry is None:
                continue
            # Node health is each worker's business: here a failure only frees the slot
            # (this balancer never ejects: eject_after is out of reach).
            failure = item.get("failure")
            if failure is not None:
                failure = Failure(failure)
                if failure is not Failure.CANCELLED:
                    failure = Failure.TRANSIENT
            self.balancer.release(entry[1], texts=item.get("texts", 0),
                                  seconds=item.get("seconds", 0.0), failure=failure)
        self._dispatch()

    def state(self) -> dict:
        return {name: {"cap": s.cap, "inflight": s.inflight, "max_inflight_seen":
                       s.max_inflight_seen, "texts": s.texts, "speed": s.speed}
                for name, s in self.balancer.nodes.items()}

    def add_worker(self, scheduler, worker: str) -> None:
        self.gone.discard(worker)  # a restarted worker may come back on the same address

    def remove_worker(self, scheduler, worker: str, **kwargs) -> None:
        self.gone.add(worker)
        for lease, (owner, node) in list(self.leases.items()):
            if owner == worker:
                del self.leases[lease]
                self.balancer.settle(node, CANCELLED)
        self._dispatch()

    def _dispatch(self) -> None:
        kept: list[tuple] = []
        granted: list[asyncio.Future] = []
        for entry in self.waiters:
            _, _, _, future, worker, avoid, unusable = entry
            if future.done():
                continue
            if worker in self.gone:
                future.set_result(None)
                continue
            node = self.balancer.choose(avoid, unusable)
            if node is None:
                kept.append(entry)
                continue
            lease = next(self._ids)
            self.leases[lease] = (worker, node)
            future.set_result({"node": node, "lease": lease, "contended": False})
            granted.append(future)
        self.waiters = kept
        # Requests for new work still waiting: the slots just granted are wanted elsewhere.
        if any(not entry[0] for entry in kept):
            for future in granted:
                future.result()["contended"] = True
