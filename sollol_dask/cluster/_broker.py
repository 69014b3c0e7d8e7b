"""The cluster's slots: the ``SlotBroker`` on the scheduler. (``BrokerSlots``, the slot
source a worker's router is built with, is in ``_broker_slots``.)

The broker runs the same pure balancer over the whole cluster, so per-node caps hold
across all workers; workers ask it for leases, many in one request (see
``_broker_slots``). The worker's router keeps its own balancer for what that worker sees
(health, speed, timeouts) and tells the broker which nodes it cannot use. Leases live in
a ``LeaseTable``: ids chosen by the worker (a repeated request is answered with the same
grants), expiring unless renewed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time

from distributed.diagnostics.plugin import SchedulerPlugin

from .._outcome import CANCELLED, Failure
from ..policy._balancer import SlotBalancer
from ..policy._leases import LeaseTable
from ..policy._waiters import Waiter, WaiterQueue
from ._broker_slots import BROKER_WAIT, BrokerSlots

logger = logging.getLogger(__name__)
BROKER_NAME = "sollol-dask-slots"
__all__ = ["BROKER_NAME", "BrokerSlots", "SlotBroker"]


@dataclasses.dataclass
class _Request:
    """A waiting lease request: its reply, and the lease ids it brought (None: one
    lease, named here, for callers of the single-lease form)."""
    future: asyncio.Future
    ids: list[str] | None


class SlotBroker(SchedulerPlugin):
    """Cluster-wide per-node slots on the scheduler: caps hold across all workers.

    Handlers: ``sollol_slots_acquire`` (waits up to ``timeout`` for leases on the best
    free nodes: one, or with ``leases=[ids]`` up to that many at once; the oldest job's
    requests first, then first come, first served, across all workers; "spare" requests,
    for hedge copies, only when no other request wants the slot), ``sollol_slots_release``
    and ``sollol_slots_renew``. Leases of a worker that leaves the cluster are taken back,
    and leases not renewed within the table's ttl expire. Node health is each worker's
    business: workers pass the nodes they cannot use.
    """

    name = BROKER_NAME
    idempotent = True

    def __init__(self, clock=time.monotonic) -> None:
        self.clock = clock

    async def start(self, scheduler) -> None:
        self.balancer = SlotBalancer([], [], clock=self.clock, eject_after=2**31)
        self.waiters = WaiterQueue()
        self.leases = LeaseTable(self.clock)
        # Workers that left: a request of theirs still waiting here (its handler outlives
        # the dead connection) must not be granted a lease nobody would give back.
        self.gone: set[str] = set()
        # Per worker: the caps it last sent, and the known nodes it does not use. A
        # request that repeats them costs no walk over the fleet.
        self._caps: dict[str, tuple[dict, int, frozenset]] = {}
        self._ids = itertools.count(1)
        self.requests = 0  # lease RPCs served (acquire, release, renew)
        self.granted = 0
        self.expired = 0
        scheduler.handlers["sollol_slots_acquire"] = self.acquire
        scheduler.handlers["sollol_slots_release"] = self.release
        scheduler.handlers["sollol_slots_renew"] = self.renew

    async def acquire(self, worker: str, nodes: dict[str, int] | None, avoid=(), unusable=(),
                      timeout: float = BROKER_WAIT, priority: float = 0.0,
                      spare: bool = False, leases: list[str] | None = None) -> dict | None:
        """One lease ``{"node", "lease", "contended", "spt"}``; or, given ``leases`` (ids the
        worker chose), ``{"grants": [{"node", "lease", "spt"}...], "contended"}`` with up to
        that many. None when nothing came within ``timeout``. ``nodes`` (the worker's
        nodes and caps) is None when they are those of its last request: on 10,000 nodes
        the map cost more than the grant; ``{"send_nodes": True}`` if they are not known
        here (a scheduler restarted, a worker that left)."""
        self.requests += 1
        if nodes is None:
            if worker not in self._caps:
                return {"grants": [], "contended": False, "send_nodes": True}
            nodes = self._caps[worker][0]
        if leases:
            held = [e for e in map(self.leases.get, leases) if e is not None and e.owner == worker]
            if held:  # this request was delivered before: the same answer again
                return {"grants": [{"node": e.node, "lease": e.lease, "spt": self._speed(e.node)}
                                   for e in held],
                        "contended": False}
        # Several configurations share the broker (caps belong to nodes, not to runs):
        # grant only among the nodes this router uses.
        banned = frozenset(unusable) | self._outside(worker, nodes)
        future = asyncio.get_running_loop().create_future()
        waiter = self.waiters.push(_Request(future, list(leases) if leases else None),
                                   priority=priority, spare=spare, avoid=frozenset(avoid),
                                   banned=banned, owner=worker)
        self._dispatch()
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except asyncio.TimeoutError:
            if future.done() and future.exception() is None:
                return future.result()
            future.cancel()
            self.waiters.discard(waiter)
            return None

    def _outside(self, worker: str, nodes: dict[str, int]) -> frozenset:
        """Learn ``worker``'s nodes and caps; the known nodes it does not use."""
        seen = self._caps.get(worker)
        # ``nodes`` is the kept map itself when the worker sent none (no compare then).
        if seen is not None and seen[1] == len(self.balancer.nodes) \
                and (seen[0] is nodes or seen[0] == nodes):
            return seen[2]
        for name, cap in nodes.items():
            self.balancer.add_node(name, cap)
        outside = frozenset(self.balancer.nodes) - frozenset(nodes)
        self._caps[worker] = (dict(nodes), len(self.balancer.nodes), outside)
        return outside

    def release(self, worker: str, leases: list[dict]) -> None:
        self.requests += 1
        for item in leases:
            entry = self.leases.release(item["lease"])
            if entry is None:  # returned before, or expired: its slot is free already
                continue
            # Node health is each worker's business: here a failure only frees the slot
            # (this balancer never ejects: eject_after is out of reach).
            failure = item.get("failure")
            if failure is not None:
                failure = Failure(failure)
                if failure is not Failure.CANCELLED:
                    failure = Failure.TRANSIENT
            self.balancer.release(entry.node, texts=item.get("texts", 0),
                                  seconds=item.get("seconds", 0.0), failure=failure)
        self._dispatch()

    def renew(self, worker: str, leases: list[str]) -> int:
        """Keep ``worker``'s leases alive; how many it still holds here."""
        self.requests += 1
        return self.leases.renew(worker, leases)

    def state(self) -> dict:
        return {name: {"cap": s.cap, "inflight": s.inflight, "max_inflight_seen":
                       s.max_inflight_seen, "texts": s.texts, "speed": s.speed}
                for name, s in self.balancer.nodes.items()}

    def load(self) -> dict:
        """Counters of the broker's own work (benchmarks read them)."""
        return {"requests": self.requests, "granted": self.granted, "held": len(self.leases),
                "expired": self.expired, "waiting": len(self.waiters)}

    def add_worker(self, scheduler, worker: str) -> None:
        self.gone.discard(worker)  # a restarted worker may come back on the same address

    def remove_worker(self, scheduler, worker: str, **kwargs) -> None:
        self.gone.add(worker)
        self._caps.pop(worker, None)
        for entry in self.leases.take_owner(worker):
            self.balancer.settle(entry.node, CANCELLED)
        self._dispatch()

    def _live(self, waiter: Waiter) -> bool:
        if waiter.ticket.future.done():
            return False
        if waiter.owner in self.gone:
            waiter.ticket.future.set_result(None)
            return False
        return True

    def _grant(self, waiter: Waiter, node: str) -> None:
        request = waiter.ticket
        if request.ids is None:
            lease = f"b{next(self._ids)}"
            self.leases.grant(lease, waiter.owner, node)
            self.granted += 1
            request.future.set_result({"node": node, "lease": lease, "contended": False,
                                       "spt": self._speed(node), "free": self._free_slots()})
            return
        nodes = [node, *self.balancer.choose_many(len(request.ids) - 1, waiter.avoid,
                                                  waiter.banned)]
        for lease, name in zip(request.ids, nodes):
            self.leases.grant(lease, waiter.owner, name)
        self.granted += len(nodes)
        request.future.set_result({"grants": [{"node": n, "lease": i, "spt": self._speed(n)}
                                              for i, n in zip(request.ids, nodes)],
                                   "contended": False, "free": self._free_slots()})

    def _free_slots(self) -> int:
        """Slots of the fleet no worker holds (the tail rule of each worker shares what
        it has left over the slots it holds and these)."""
        return max(0, self.balancer.usable_slots() - self.balancer.held)

    def _speed(self, node: str) -> float | None:
        """The node's seconds per text as measured from every worker's batches: a worker
        that has not sent to it yet sizes its batch from this, not a blind first batch
        (on 1,024 slow nodes each worker's first batches of 16 made a 13 s tail)."""
        return self.balancer.nodes[node].seconds_per_text

    def _dispatch(self) -> None:
        for entry in self.leases.expired():
            self.expired += 1
            self.balancer.settle(entry.node, CANCELLED)
            logger.warning("slot lease %s of worker %s on %s was neither returned nor renewed "
                           "within %.0f s: its slot is taken back", entry.lease, entry.owner,
                           entry.node, self.leases.ttl)
        # Once no node has a free slot, the rest of the queue is not examined: with
        # hundreds of requests waiting, each release would otherwise cost a full scan.
        served = self.waiters.serve(lambda w: self.balancer.choose(w.avoid, w.banned),
                                    self._grant, live=self._live,
                                    exhausted=lambda: not self.balancer.has_free_slot())
        # Requests for new work still waiting: the slots just granted are wanted elsewhere.
        if self.waiters.wanting(self._live):
            for waiter in served:
                waiter.ticket.future.result()["contended"] = True
