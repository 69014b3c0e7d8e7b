"""The cluster's slots: the ``SlotBroker`` on the scheduler, and ``BrokerSlots``, the slot
source a worker's router is built with.

The broker runs the same pure balancer over the whole cluster, so per-node caps hold
across all workers; each worker asks it for a lease per batch. The worker's router keeps
its own balancer for what that worker sees (health, speed, timeouts) and tells the
broker which nodes it cannot use.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable

from distributed.diagnostics.plugin import SchedulerPlugin

from .._outcome import CANCELLED, Failure, Outcome
from ..engine._slots import Grant
from ..policy._balancer import Health, SlotBalancer
from ..policy._waiters import Waiter, WaiterQueue

logger = logging.getLogger(__name__)
BROKER_NAME = "sollol-dask-slots"
_BROKER_WAIT = 5.0  # a lease request waits at most this long, then the worker re-checks


class BrokerSlots:
    """Leases from the cluster's ``SlotBroker``; ``call(handler, **kw)`` reaches the
    scheduler (an awaitable on the router's loop)."""

    def __init__(self, balancer: SlotBalancer, call: Callable, worker: str) -> None:
        self.balancer = balancer
        self._call = call
        self._worker = worker
        self._releases: set[asyncio.Future] = set()  # lease returns still on their way

    def _caps(self) -> dict[str, int]:
        """The nodes this router may use, with its caps (the broker learns them)."""
        return {n: s.cap for n, s in self.balancer.nodes.items()
                if s.health is not Health.EXCLUDED}

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
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)
        task.add_done_callback(_log_failure)

    def _return_unused(self, request: asyncio.Future) -> None:
        if request.cancelled() or request.exception() is not None or not request.result():
            return
        granted = request.result()
        self._send_release(Grant(granted["node"], granted["lease"]), CANCELLED)

    # The waiters are on the scheduler, which serves them when leases come back; a
    # request there returns within _BROKER_WAIT and the router then re-checks its nodes.
    def wake(self) -> None:
        pass

    def fail_waiters(self, error: Exception) -> None:
        pass

    async def aclose(self, timeout: float = 2.0) -> None:
        """Let lease returns reach the scheduler (briefly), then cancel what is left."""
        pending = list(self._releases)
        if pending:
            _, late = await asyncio.wait(pending, timeout=timeout)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

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
        self.waiters = WaiterQueue()
        self.leases: dict[int, tuple[str, str]] = {}  # lease -> (worker, node)
        # Workers that left: a request of theirs still waiting here (its handler outlives
        # the dead connection) must not be granted a lease nobody would give back.
        self.gone: set[str] = set()
        self._ids = itertools.count(1)
        self.requests = 0  # lease RPCs served (acquire and release)
        self.granted = 0
        scheduler.handlers["sollol_slots_acquire"] = self.acquire
        scheduler.handlers["sollol_slots_release"] = self.release

    async def acquire(self, worker: str, nodes: dict[str, int], avoid=(), unusable=(),
                      timeout: float = _BROKER_WAIT, priority: float = 0.0,
                      spare: bool = False) -> dict | None:
        self.requests += 1
        for name, cap in nodes.items():
            self.balancer.add_node(name, cap)
        # Several configurations share the broker (caps belong to nodes, not to runs):
        # grant only among the nodes this router uses.
        banned = frozenset(unusable) | (frozenset(self.balancer.nodes) - frozenset(nodes))
        future = asyncio.get_running_loop().create_future()
        waiter = self.waiters.push(future, priority=priority, spare=spare,
                                   avoid=frozenset(avoid), banned=banned, owner=worker)
        self._dispatch()
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except asyncio.TimeoutError:
            if future.done() and future.exception() is None:
                return future.result()
            future.cancel()
            self.waiters.discard(waiter)
            return None

    def release(self, worker: str, leases: list[dict]) -> None:
        self.requests += 1
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

    def load(self) -> dict:
        """Counters of the broker's own work (benchmarks read them)."""
        return {"requests": self.requests, "granted": self.granted, "held": len(self.leases)}

    def add_worker(self, scheduler, worker: str) -> None:
        self.gone.discard(worker)  # a restarted worker may come back on the same address

    def remove_worker(self, scheduler, worker: str, **kwargs) -> None:
        self.gone.add(worker)
        for lease, (owner, node) in list(self.leases.items()):
            if owner == worker:
                del self.leases[lease]
                self.balancer.settle(node, CANCELLED)
        self._dispatch()

    def _live(self, waiter: Waiter) -> bool:
        if waiter.ticket.done():
            return False
        if waiter.owner in self.gone:
            waiter.ticket.set_result(None)
            return False
        return True

    def _grant(self, waiter: Waiter, node: str) -> None:
        lease = next(self._ids)
        self.granted += 1
        self.leases[lease] = (waiter.owner, node)
        waiter.ticket.set_result({"node": node, "lease": lease, "contended": False})

    def _dispatch(self) -> None:
        # Once no node has a free slot, the rest of the queue is not examined: with
        # hundreds of requests waiting, each release would otherwise cost a full scan.
        served = self.waiters.serve(lambda w: self.balancer.choose(w.avoid, w.banned),
                                    self._grant, live=self._live,
                                    exhausted=lambda: not self.balancer.has_free_slot())
        # Requests for new work still waiting: the slots just granted are wanted elsewhere.
        if self.waiters.wanting(self._live):
            for waiter in served:
                waiter.ticket.result()["contended"] = True
