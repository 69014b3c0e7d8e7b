"""The per-process embedding engine: connection pools, batches, slots, retries, probes.

One ``Router`` per process (per Dask worker, through the WorkerPlugin) runs on its own
event-loop thread, so every thread of the process shares its pools and its balancer.
HTTP goes through one pool per node (``_transport``), which raises ``NodeError`` only.

A batch's life: wait for a slot (oldest job first) -> the balancer names the best
free node -> POST -> parse and check every row -> done; on a transient failure or a bad
answer the slot is released with the outcome and the batch waits for a slot on another
node, up to ``max_attempts``. Whatever a node says reaches exceptions, logs, warnings and
metrics clipped (``_limits``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import orjson

from ..policy._balancer import Health, SlotBalancer
from ..policy._retry import backoff_delay
from ..policy._batching import dedupe, tail_size
from ._job import Batch, Job
from .._exceptions import (
    BadResponseError,
    InputError,
    ModelNotFoundError,
    NoNodeAvailableError,
    NodeError,
    SollolError,
)
from ..policy._identity import Reference, choose_reference, mismatch
from ..policy._limits import PROBE_BYTES, clip, embed_limit
from ._loop import LoopThread
from .._node import Node
from .._settings import RouterSettings
from .._outcome import CANCELLED, Failure, Outcome
from ._slots import Grant, LocalSlots, SlotSource
from ._tasks import BackgroundTasks
from ._transport import NodePool, open_pool
from ..backends import BACKENDS, Reply
from ..policy._identity import NodeInfo
from ..backends._base import input_too_long, unencodable

logger = logging.getLogger(__name__)
_SUPERVISE_EVERY = 0.1  # seconds between checks for due probes and the all-down deadline
_RECHECK_HEDGE = 0.5  # a lane that found the fleet busy looks for a hedge again after this
# Batches expected to take less than this fraction of batch_seconds are not shrunk at a
# job's end: their tail is short anyway, and more requests would cost client CPU.
_TAIL_MATTERS = 0.5


class FleetWarning(UserWarning):
    """A node was left out of a run (model missing, other digest or dimension, down)."""


class Router:
    """Embeds lists of texts over a fleet of nodes. Thread-safe; see module docstring."""

    def __init__(self, settings: RouterSettings, *, clock=time.monotonic,
                 slots: Callable[[SlotBalancer], SlotSource] | None = None) -> None:
        self.settings = settings
        self.clock = clock
        self.nodes: dict[str, Node] = {n.name: n for n in settings.nodes}
        self.balancer = SlotBalancer(
            list(self.nodes),
            [n.max_inflight or BACKENDS[n.api].default_max_inflight for n in settings.nodes],
            weights=[n.weight for n in settings.nodes],
            clock=clock,
            eject_after=settings.eject_after,
            min_timeout=settings.min_timeout,
            timeout_factor=settings.timeout_factor,
            first_timeout=settings.first_timeout,
            quarantine_after=settings.quarantine_after,
        )
        self.infos: dict[str, NodeInfo] = {}
        self.reference: Reference | None = None
        self._loop: LoopThread | None = None
        self._pools: dict[str, NodePool] = {}
        self.slots = (slots or LocalSlots)(self.balancer)  # this process's, or the cluster's (the plugin's)
        self._ready: asyncio.Future | None = None
        self._supervisor: asyncio.Task | None = None
        self._all_down_since: float | None = None
        self._tasks = BackgroundTasks()  # supervisor, warm-ups, re-probes
        self._closed = False
        self._start_lock = threading.Lock()

    # -- synchronous surface ---------------------------------------------------------

    def embed(self, texts: Sequence[str], row_ids: Sequence | None = None) -> np.ndarray:
        """Vectors for ``texts`` as float32 ``(len(texts), dim)``, rows in input order."""
        return self._thread().run(self.aembed(texts, row_ids))

    def check_fleet(self) -> Reference:
        """Probe every node now (if not done yet) and return the run's dimension/digest."""
        return self._thread().run(self._ensure_ready())

    def close(self) -> None:
        with self._start_lock:
            if self._closed:
                return
            self._closed = True
        if self._loop is not None:
            self._loop.shutdown(self._aclose())  # from any thread, a finalizer's included

    def _thread(self) -> LoopThread:
        with self._start_lock:  # many task threads may make the first call at once
            if self._closed:
                raise SollolError("this router is closed; create a new Embedder")
            if self._loop is None:
                self._loop = LoopThread()
            return self._loop

    async def _aclose(self) -> None:
        self.slots.fail_waiters(SollolError("router closed"))
        await self._tasks.cancel_all()
        await asyncio.gather(*(p.aclose() for p in self._pools.values()), return_exceptions=True)

    # -- embedding -------------------------------------------------------------------

    async def aembed(self, texts: Sequence[str], row_ids: Sequence | None = None) -> np.ndarray:
        texts = list(texts)
        labels = list(row_ids) if row_ids is not None else list(range(len(texts)))
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InputError(
                    f"row {labels[i]!r} is {type(text).__name__}, not str: pass text only "
                    "(embed_dataframe and embed_parquet turn missing values into null vectors)",
                    row=labels[i],
                )
        ref = await self._ensure_ready()
        if not texts:
            return np.empty((0, ref.dimension), np.float32)
        unique, inverse = dedupe(texts)
        first_label: dict[int, object] = {}
        for i, u in enumerate(inverse.tolist()):
            first_label.setdefault(u, labels[i])
        job = Job(unique, [first_label[i] for i in range(len(unique))], ref.dimension,
                  self.settings.max_batch_chars)
        lanes = {asyncio.ensure_future(self._lane(job)) for _ in range(self._lane_count(job))}
        finished = asyncio.ensure_future(job.finished.wait())
        try:
            # Done when every row is stored: lanes still waiting to copy a batch that has
            # meanwhile come back are not waited for. A lane's error ends the call.
            while not finished.done():
                done, lanes = await asyncio.wait(lanes | {finished},
                                                 return_when=asyncio.FIRST_COMPLETED)
                lanes.discard(finished)
                for lane in done - {finished}:
                    lane.result()
                if not lanes and not finished.done():
                    raise SollolError(f"internal error: {job.untaken} rows were never sent")
        finally:
            for task in (*lanes, finished):
                task.cancel()
            await asyncio.gather(*lanes, finished, return_exceptions=True)
        return job.matrix[inverse]

    def _lane_count(self, job: Job) -> int:
        # One lane per slot the fleet has (no more can be in flight), and no more lanes
        # than small batches in the job.
        return max(1, min(self.balancer.usable_slots(), -(-len(job.texts) // 8), 256))

    async def _lane(self, job: Job) -> None:
        """Take a slot, cut a batch for that node, send it; retry or hedge; until done."""
        batch: Batch | None = None
        elsewhere: frozenset[str] = frozenset()  # a hedge looks for another node next
        while True:
            # A lane with nothing left to take looks for a hedge: a spare slot.
            grant = await self._acquire(frozenset(batch.tried) if batch else elsewhere,
                                        job.priority, spare=batch is None and job.untaken == 0)
            if batch is None:
                size = self.balancer.batch_size_for(grant.node, self.settings.batch_size,
                                                    self.settings.batch_seconds)
                # Nothing else waits (maybe the run's tail) and a batch here is long enough
                # for its tail to matter: share what is left over every slot.
                expected = self.balancer.expected_seconds(grant.node, size) or 0.0
                if not grant.contended and expected >= _TAIL_MATTERS * self.settings.batch_seconds:
                    size = tail_size(size, job.untaken, self.balancer.usable_slots())
                batch = job.take(size)
                if batch is None:
                    target, later = self._hedge_target(job, grant.node)
                    if target is not None and grant.contended:
                        # Other work waits for slots: copies only when the fleet idles.
                        target, later = None, _RECHECK_HEDGE
                    if target is None:
                        self.slots.release(grant, CANCELLED)
                        if later is None:
                            return
                        await asyncio.sleep(later)  # a copy may pay off then: look again
                        elsewhere = frozenset({grant.node})
                        continue
                    target.hedged = True
                    await self._attempt(job, target, grant, hedge=True)
                    continue
            if await self._attempt(job, batch, grant):
                batch = None

    async def _acquire(self, avoid: frozenset[str], priority: float,
                       spare: bool = False) -> Grant:
        while True:
            if not self.balancer.has_usable_node():
                raise self._no_node_error()
            if not self.balancer.any_up():
                await self._wait_for_up_node()
            grant = await self.slots.acquire(avoid, priority, spare)
            if grant is not None:
                return grant

    async def _wait_for_up_node(self) -> None:
        down_since = self._all_down_since or self.clock()
        while not self.balancer.any_up():
            if not self.balancer.has_usable_node() or \
                    self.clock() - down_since >= self.settings.wait_for_nodes:
                raise self._no_node_error()
            await asyncio.sleep(_SUPERVISE_EVERY)

    async def _attempt(self, job: Job, batch: Batch, grant: Grant, hedge: bool = False) -> bool:
        """Send ``batch`` on the granted node. True: the batch needs nothing more from this
        lane (stored, replaced by halves, or a hedge copy that lost); False: retry it."""
        name = grant.node
        texts, labels = job.texts_of(batch), job.labels_of(batch)
        request = asyncio.ensure_future(self._post(name, texts, labels))
        batch.running[name] = (request, self.clock())
        job.in_flight.add(batch)
        if not hedge:
            batch.attempts += 1
        started = self.clock()
        try:
            vectors = await request
        except asyncio.CancelledError:
            batch.running.pop(name, None)
            self.slots.release(grant, CANCELLED)
            if batch.done and not asyncio.current_task().cancelling():
                return True  # another copy of this batch won
            request.cancel()
            raise
        except (NodeError, BadResponseError) as err:
            batch.running.pop(name, None)
            failure = err.failure
            self.slots.release(grant, Outcome(failure=failure, hard=err.hard,
                                              retry_after=getattr(err, "retry_after", None),
                                              reason=clip(err)))
            if failure is Failure.NODE_FATAL:
                self._exclude(name, str(err))
            else:
                self._fail_if_none_usable()  # the last node may have been quarantined
            if batch.done or hedge:
                return True
            return await self._after_failure(job, batch, name, failure, err)
        batch.running.pop(name, None)
        self.slots.release(grant, Outcome(texts=batch.size, seconds=self.clock() - started))
        if job.store(batch, vectors):
            for task, _ in batch.running.values():
                task.cancel()  # the slower copy loses
        return True

    async def _after_failure(self, job: Job, batch: Batch, name: str, failure: Failure,
                             err: SollolError) -> bool:
        labels = job.labels_of(batch)
        if failure is Failure.CALLER:
            raise err
        if failure in (Failure.TOO_LONG, Failure.TOO_BIG):
            if batch.size == 1:
                if failure is Failure.TOO_LONG:
                    raise input_too_long(labels[0], name, str(err)) from None
                raise err
            job.in_flight.discard(batch)
            if failure is Failure.TOO_BIG:  # cut to the limit learnt (or half the batch)
                self.balancer.limit_batch(name, batch.size, err.max_inputs)
                step = min(self.balancer.nodes[name].max_batch, (batch.size + 1) // 2)
            else:  # bisect to find the row
                step = (batch.size + 1) // 2
            for start in reversed(range(batch.start, batch.stop, step)):
                job.requeue(Batch(start, min(start + step, batch.stop)))
            return True
        batch.tried.add(name)
        logger.info("batch of %d (rows %r..%r) failed on %s, attempt %d: %s",
                    batch.size, labels[0], labels[-1], name, batch.attempts, clip(err))
        if batch.attempts >= self.settings.max_attempts:
            raise NodeError(
                f"rows {labels[0]!r}..{labels[-1]!r} failed on {batch.attempts} attempts "
                f"(nodes tried: {', '.join(sorted(batch.tried))}); last error: {clip(err)}. Check "
                "the nodes, or raise max_attempts",
                node=name, retryable=True,
            )
        await asyncio.sleep(backoff_delay(batch.attempts))
        return False

    def _hedge_target(self, job: Job, fast: str) -> tuple[Batch | None, float | None]:
        """The in-flight batch a copy on ``fast`` would finish much sooner, if any; else
        in how many seconds one may qualify (None: never, so the lane can stop).

        A copy pays off when the holder's expected remaining time exceeds 1.5x the time
        ``fast`` needs. A holder not measured yet, or overdue (a batch sent before its node
        was measured keeps that request's long timeout), is judged by how long the batch
        has run: it qualifies once it has run 1.5x what ``fast`` needs."""
        now = self.clock()
        best, best_gain, later = None, 0.0, None
        for batch in job.in_flight:
            if batch.done or batch.hedged:
                continue
            mine = self.balancer.expected_seconds(fast, batch.size)
            if mine is None or fast in batch.running:
                # Another node may take a copy: keep looking.
                later = _RECHECK_HEDGE if later is None else min(later, _RECHECK_HEDGE)
                continue
            for node, (_, started) in batch.running.items():
                theirs = self.balancer.expected_seconds(node, batch.size)
                if theirs is None or now > started + theirs:  # unmeasured, or overdue
                    gain = (now - started) - mine
                    if gain <= 0.5 * mine:
                        wait = started + 1.5 * mine - now
                        later = wait if later is None else min(later, wait)
                        continue
                else:
                    gain = (started + theirs - now) - mine
                if gain > max(best_gain, 0.5 * mine):
                    best, best_gain = batch, gain
        if later is not None:
            later = max(later, 0.01)
        return best, later

    async def _post(self, name: str, texts: list[str], labels: list) -> np.ndarray:
        node = self.nodes[name]
        backend = BACKENDS[node.api]
        try:
            body = backend.embed_body(texts, self.settings.opts)
        except orjson.JSONEncodeError as exc:
            raise unencodable(texts, labels, exc) from None
        timeout = self.balancer.timeout_for(name, len(texts))
        ref = self.reference
        limit = embed_limit(len(texts), ref.dimension if ref else None,
                            self.settings.max_response_bytes)
        reply = await self._request(name, "POST", backend.embed_path, body, timeout, limit)
        if reply.status != 200:
            raise backend.classify_reply(reply, name, self.settings.opts.model)
        # Every row checked: count, order, finite, non-zero, the fleet's dimension and norm.
        return backend.parse_embed(reply.content, len(texts), name,
                                   dimension=ref.dimension if ref else None,
                                   norm=ref.norm if ref else None)

    async def _request(self, name: str, method: str, path: str, body: bytes | None,
                       timeout: float, max_bytes: int) -> Reply:
        """One HTTP exchange, its body bounded; transport failures arrive as ``NodeError``."""
        pool = self._pools.get(name)
        if pool is None:
            node = self.nodes[name]
            pool = self._pools[name] = open_pool(
                name, node.url, node.headers, self.balancer.nodes[name].cap + 4,
                self.settings.verify)
        return await pool.request(method, path, body, timeout, max_bytes)

    # -- nodes leaving and joining -------------------------------------------------------

    def _no_node_error(self) -> NoNodeAvailableError:
        reasons = {s.name: f"{s.health.value}: {s.reason}" for s in self.balancer.nodes.values()}
        listing = "; ".join(f"{k} ({v})" for k, v in reasons.items())
        return NoNodeAvailableError(
            f"no node can embed with {self.settings.opts.model!r}: {listing}. Start or fix a "
            "node and run again (embed_parquet resumes where it stopped)",
            reasons,
        )

    def _exclude(self, name: str, reason: str) -> None:
        reason = clip(reason)
        if self.balancer.nodes[name].health is not Health.EXCLUDED:
            logger.warning("node %s excluded: %s", name, reason)
            warnings.warn(f"node {name} excluded: {reason}", FleetWarning, stacklevel=2)
        self.balancer.exclude(name, reason)
        self._fail_if_none_usable()

    def _fail_if_none_usable(self) -> None:
        """Batches waiting for a slot fail at once when no node can take them any more
        (all excluded or quarantined); else they look again."""
        if not self.balancer.has_usable_node():
            self.slots.fail_waiters(self._no_node_error())
        else:
            self.slots.wake()

    # -- fleet check and probes --------------------------------------------------------

    async def _ensure_ready(self) -> Reference:
        if self._ready is None or (self._ready.done() and self._ready.exception() is not None):
            self._ready = asyncio.ensure_future(self._check_fleet())
        return await asyncio.shield(self._ready)

    async def _check_fleet(self) -> Reference:
        names = list(self.nodes)
        results = await asyncio.gather(*(self._describe(n) for n in names), return_exceptions=True)
        for name, result in zip(names, results):
            if isinstance(result, BaseException):
                self._probe_failed(name, result, "fleet check")
            else:
                self.infos[name] = result
        self.reference = choose_reference(names, self.infos)
        if self.reference is None:
            missing = [r for r in results if isinstance(r, ModelNotFoundError)]
            if missing and len(missing) == len(results):
                model = self.settings.opts.model
                raise ModelNotFoundError(
                    f"model {model!r} is on none of the nodes ({', '.join(names)}): run "
                    f"`ollama pull {model}` on them, or check the model name", node=names[0])
            raise self._no_node_error()
        for name, info in self.infos.items():
            self._admit(name, info)
        if not self.balancer.has_usable_node():
            raise self._no_node_error()
        if self._supervisor is None:
            self._supervisor = self._tasks.spawn(
                self._tasks.every(_SUPERVISE_EVERY, self._supervise, "fleet supervisor"),
                "fleet supervisor")
        return self.reference

    def _admit(self, name: str, info: NodeInfo) -> bool:
        """Let a described node take work if it matches the fleet; exclude it if not."""
        why = mismatch(info, self.reference, self.settings.opts.model)
        if why is not None:
            self._exclude(name, why)
            return False
        node = self.nodes[name]
        if node.max_inflight is None and info.total_slots:
            self.balancer.set_cap(name, info.total_slots)
        if info.loaded is False and BACKENDS[node.api].warm_body(self.settings.opts):
            self.balancer.warming(name)
            self._tasks.spawn(self._warm(name), f"warm-up of {name}")
            return False
        return True

    async def _warm(self, name: str) -> None:
        """Load a cold node's model before it gets batches (its load must not stall a
        partition), then let it join."""
        backend = BACKENDS[self.nodes[name].api]
        try:
            reply = await self._request(name, "POST", backend.embed_path,
                                        backend.warm_body(self.settings.opts),
                                        self.settings.first_timeout, PROBE_BYTES)
            if reply.status != 200:
                raise backend.classify_reply(reply, name, self.settings.opts.model)
        except Exception as err:  # whatever it is, the node is not ready: never escapes
            self._probe_failed(name, err, "warm-up")
        else:
            logger.info("node %s has loaded %s", name, self.settings.opts.model)
            self.balancer.probe_result(name, True)
        self.slots.wake()

    async def _describe(self, name: str) -> NodeInfo:
        node = self.nodes[name]

        async def fetch(method: str, path: str, payload) -> Reply:
            body = orjson.dumps(payload) if payload is not None else None
            return await self._request(name, method, path, body, self.settings.probe_timeout,
                                       PROBE_BYTES)

        return await BACKENDS[node.api].describe(fetch, self.settings.opts, name)

    def _probe_failed(self, name: str, err: BaseException, what: str) -> None:
        """A fleet check, warm-up or re-probe of ``name`` failed: exclude the node if it
        cannot serve the run, count a strike for a bad answer, else eject it (re-probed
        after a back-off). Every exception ends here, so none escapes a task."""
        failure = getattr(err, "failure", None)
        text = f"{what} failed: {clip(err)}"
        if isinstance(err, ModelNotFoundError) or failure in (Failure.NODE_FATAL, Failure.CALLER):
            self._exclude(name, str(err))
            return
        if failure is Failure.BAD_RESPONSE:
            self.balancer.strike(name, text)
        else:
            if not isinstance(err, SollolError):  # a bug of ours: its traceback, once
                self._tasks.report_bug(f"{what} of node {name}", err)
            elif what == "fleet check":
                logger.warning("node %s is not answering (%s); it will be re-probed",
                               name, clip(err))
            self.balancer.probe_result(name, False, text)
        self._fail_if_none_usable()

    def _supervise(self) -> None:
        """Re-probe ejected nodes when due; fail waiting batches if all stay down."""
        for name in self.balancer.due_probes():
            self._tasks.spawn(self._reprobe(name), f"re-probe of {name}")
        if self.balancer.end_pauses():
            self.slots.wake()  # a node that asked for a pause takes work again
        if self.balancer.any_up():
            self._all_down_since = None
        else:
            now = self.clock()
            self._all_down_since = self._all_down_since or now
            if now - self._all_down_since >= self.settings.wait_for_nodes:
                self.slots.fail_waiters(self._no_node_error())

    async def _reprobe(self, name: str) -> None:
        try:
            info = await self._describe(name)
        except Exception as err:  # HTML from a proxy, a bug: a failed probe, never lost
            self._probe_failed(name, err, "probe")
            return
        self.infos[name] = info
        if self.reference is None:
            self.reference = choose_reference(list(self.nodes), self.infos)
        if self._admit(name, info):
            logger.info("node %s answers again; restored", name)
            self.balancer.probe_result(name, True)
        self.slots.wake()

    # -- metrics ---------------------------------------------------------------------

    def snapshot(self) -> list[dict]:
        """Per-node counters and state, plain msgpack-able data (for reports, status,
        the dashboard). Never contains header values."""
        out = []
        for s in self.balancer.nodes.values():
            info = self.infos.get(s.name)
            out.append({
                "node": s.name, "api": self.nodes[s.name].api, "model": self.settings.opts.model,
                "digest": (info.digest or "")[:12] if info else "", "state": s.health.value,
                "reason": s.reason, "cap": s.cap, "inflight": s.inflight,
                "max_inflight_seen": s.max_inflight_seen, "requests": s.requests,
                "texts": s.texts, "errors": dict(s.errors), "speed": s.speed,
                "latency_counts": list(s.latency_counts), "latency_sum": s.latency_sum,
                "size": info.size if info else None, "size_vram": info.size_vram if info else None,
            })
        return out

