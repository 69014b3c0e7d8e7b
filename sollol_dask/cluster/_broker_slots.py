"""``BrokerSlots``: the slot source of a worker's router on a Dask cluster, leasing slots
from the scheduler's ``SlotBroker`` in bulk.

Lanes (batches waiting for a slot) queue here, oldest job first. One request at a time
goes to the broker and asks for as many leases as lanes wait (up to ``BULK``); the answer
is shared out here. Returns are batched too: a release waits only for the one before it
to be delivered, so under load one RPC carries many. With hundreds of nodes this is a
few RPCs per second per worker instead of two per batch.

Lease ids are made here (this source's token and a counter): a request delivered twice
names the same leases and gets the same grants. Leases held are renewed every
``RENEW_EVERY`` seconds; the broker takes back those not renewed within ``LEASE_TTL``
(a lost release, a worker that stopped answering).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections.abc import Callable

from .._exceptions import SollolError
from .._outcome import CANCELLED, Outcome
from ..engine._slots import Grant
from ..policy._balancer import Health, SlotBalancer
from ..policy._leases import RENEW_EVERY
from ..policy._waiters import Waiter, WaiterQueue

logger = logging.getLogger(__name__)
BROKER_WAIT = 5.0  # a lease request waits at most this long, then the lanes re-check
BULK = 256  # leases asked for in one request at most


def _live(waiter: Waiter) -> bool:
    return not waiter.ticket.done()


class BrokerSlots:
    """Leases from the cluster's ``SlotBroker``; ``call(handler, **kw)`` reaches the
    scheduler (an awaitable on the router's loop)."""

    def __init__(self, balancer: SlotBalancer, call: Callable, worker: str) -> None:
        self.balancer = balancer
        self._call = call
        self._worker = worker
        self._token = uuid.uuid4().hex[:12]
        self._ids = itertools.count()
        self._queue = WaiterQueue()
        self._fetcher: asyncio.Future | None = None
        self._renewer: asyncio.Future | None = None
        self._sender: asyncio.Future | None = None
        self._outbox: list[dict] = []
        self._held: set[str] = set()
        self._sent_caps: dict[str, int] | None = None  # see _changed_caps
        self._contended = False  # the broker's last answer: other requests still wait
        self._free = 0  # and the fleet's slots nobody held then
        # Lease requests sent, leases granted, and seconds requests took when they came
        # back with leases (benchmarks read these).
        self.stats = {"requests": 0, "granted": 0, "seconds": 0.0, "releases": 0}

    def free_slots(self) -> int:
        return self._free

    def _changed_caps(self) -> dict[str, int] | None:
        """The nodes and caps for a lease request; None when they are those the last
        request sent (the broker keeps them)."""
        caps = self._caps()
        if caps == self._sent_caps:
            return None
        self._sent_caps = caps
        return caps

    def _caps(self) -> dict[str, int]:
        """The nodes this router may use, with its caps (the broker learns them)."""
        return {n: s.cap for n, s in self.balancer.nodes.items()
                if s.health is not Health.EXCLUDED}

    async def acquire(self, avoid: frozenset[str], priority: float = 0.0,
                      spare: bool = False) -> Grant | None:
        """A lease, or None when none came within the broker's wait (the router then
        checks its nodes and asks again)."""
        future = asyncio.get_running_loop().create_future()
        self._queue.push(future, priority=priority, spare=spare, avoid=avoid)
        if self._fetcher is None or self._fetcher.done():
            self._fetcher = asyncio.ensure_future(self._fetch())
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and future.exception() is None \
                    and future.result() is not None:
                self.release(future.result(), CANCELLED)
            raise

    async def _fetch(self) -> None:
        """Ask the broker for leases while lanes wait: one request at a time."""
        while True:
            self._queue.serve(lambda w: None, None, live=_live)  # drop lanes served or gone
            waiting = list(self._queue)
            work = [w for w in waiting if not w.spare]
            group = (work or waiting)[:BULK]
            if not group:
                return
            # Nodes every lane of the group avoids: the broker passes them over.
            avoid = frozenset.intersection(*(w.avoid for w in group))
            ids = [f"{self._token}-{next(self._ids)}" for _ in group]
            request = asyncio.ensure_future(self._call(
                "sollol_slots_acquire", worker=self._worker, nodes=self._changed_caps(),
                avoid=sorted(avoid), unusable=self.balancer.unusable(), timeout=BROKER_WAIT,
                priority=group[0].priority, spare=not work, leases=ids))
            sent = time.perf_counter()
            self.stats["requests"] += 1
            try:
                answer = await asyncio.shield(request)
            except asyncio.CancelledError:
                # Let the request finish and give back what it brings: no leaked lease.
                request.add_done_callback(self._return_unused)
                self._sent_caps = None
                raise
            except Exception as exc:  # the scheduler is unreachable: the lanes fail
                self._sent_caps = None  # it may not have them: send them again
                for waiter in group:
                    if _live(waiter):
                        waiter.ticket.set_exception(exc)
                return
            if answer and answer.get("send_nodes"):  # the broker does not know them
                self._sent_caps = None  # the same lanes ask again, with the nodes
                continue
            if not answer or not answer["grants"]:
                for waiter in group:  # none came in time: the lanes re-check, then ask again
                    if _live(waiter):
                        waiter.ticket.set_result(None)
                continue
            self.stats["granted"] += len(answer["grants"])
            self.stats["seconds"] += time.perf_counter() - sent
            self._contended = answer["contended"]
            self._free = answer.get("free", 0)
            self._share(answer["grants"])

    def _share(self, grants: list[dict]) -> None:
        """Hand granted leases to waiting lanes: oldest job first, each lane a node it
        does not avoid when one is there."""
        pending: list[Grant] = []
        for item in grants:
            grant = Grant(item["node"], item["lease"])
            known = self.balancer.nodes.get(grant.node)
            if known is None or known.health is not Health.UP:  # down here meanwhile
                self._send_release(grant, CANCELLED)
                continue
            self.balancer.adopt_speed(grant.node, item.get("spt"))
            self.balancer.note_acquired(grant.node)
            self._held.add(grant.lease)
            pending.append(grant)
        self._ensure_renewing()

        def fitting(waiter: Waiter):
            for i, grant in enumerate(pending):
                if grant.node not in waiter.avoid:
                    return pending.pop(i)
            return None

        def any_left(waiter: Waiter):
            return pending.pop(0) if pending else None

        def give(waiter: Waiter, grant: Grant) -> None:
            contended = self._contended or bool(pending)
            waiter.ticket.set_result(Grant(grant.node, grant.lease, contended))

        for choose in (fitting, any_left):
            if pending:
                self._queue.serve(choose, give, live=_live, exhausted=lambda: not pending)
        for grant in pending:  # the lanes that asked are gone
            self.release(grant, CANCELLED)

    def release(self, grant: Grant, outcome: Outcome) -> None:
        try:
            self.balancer.settle(grant.node, outcome)
        finally:
            self._send_release(grant, outcome)  # the lease goes back whatever happens here

    def _send_release(self, grant: Grant, outcome: Outcome) -> None:
        self._held.discard(grant.lease)
        self._outbox.append({"lease": grant.lease, "texts": outcome.texts,
                             "seconds": outcome.seconds,
                             "failure": outcome.failure and outcome.failure.value})
        if self._sender is None or self._sender.done():
            self._sender = asyncio.ensure_future(self._send_releases())

    async def _send_releases(self) -> None:
        """Deliver lease returns; those made while one delivery is on its way go together
        in the next one."""
        await asyncio.sleep(0)  # returns made in the same turn of the loop go together
        while self._outbox:
            batch, self._outbox = self._outbox, []
            self.stats["releases"] += 1
            try:
                await self._call("sollol_slots_release", worker=self._worker, leases=batch)
            except Exception as exc:  # noqa: BLE001 - their leases expire on the scheduler
                logger.warning("could not return %d slot leases to the scheduler (they "
                               "expire there): %s", len(batch), exc)

    def _return_unused(self, request: asyncio.Future) -> None:
        if request.cancelled() or request.exception() is not None or not request.result():
            return
        for item in request.result()["grants"]:
            self._send_release(Grant(item["node"], item["lease"]), CANCELLED)

    def _ensure_renewing(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.ensure_future(self._renew())

    async def _renew(self) -> None:
        """Keep the leases held alive on the broker while their requests run."""
        while self._held:
            await asyncio.sleep(RENEW_EVERY)
            if self._held:
                try:
                    await self._call("sollol_slots_renew", worker=self._worker,
                                     leases=sorted(self._held))
                except Exception as exc:  # noqa: BLE001 - tried again next time
                    logger.warning("could not renew slot leases: %s", exc)

    # The broker serves its queue when leases come back; lanes waiting here are served
    # when a request to it returns (within BROKER_WAIT).
    def wake(self) -> None:
        pass

    def fail_waiters(self, error: Exception) -> None:
        for waiter in self._queue.take_all():
            if _live(waiter):
                waiter.ticket.set_exception(error)

    async def aclose(self, timeout: float = 2.0) -> None:
        """Fail waiting lanes, let lease returns reach the scheduler (briefly), then
        cancel what is left."""
        self.fail_waiters(SollolError("router closed"))
        for task in (self._fetcher, self._renewer):
            if task is not None:
                task.cancel()
        if self._sender is not None and not self._sender.done():
            _, late = await asyncio.wait([self._sender], timeout=timeout)
            for task in late:
                task.cancel()
        await asyncio.gather(*(t for t in (self._fetcher, self._renewer, self._sender)
                               if t is not None), return_exceptions=True)

    @property
    def waiting(self) -> bool:
        """Lanes wait for new work here (spare ones, for hedge copies, do not count)."""
        return self._queue.wanting(_live)
