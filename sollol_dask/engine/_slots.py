"""Where a router gets its slots: the ``SlotSource`` interface and this process's own.

A slot is the right to have one request in flight on one node. ``LocalSlots`` hands out
the slots of this process's balancer to waiting batches, those of the oldest job first
(then first come, first served): jobs (partitions) then finish one after another, and
the next one is already waiting for slots when one ends, instead of all running jobs
advancing together, ending together and leaving the nodes idle while Dask starts the
next tasks. On a Dask cluster every worker has its own router, and per-worker caps would
put W x cap requests on one Ollama node; there the router is built with the cluster's
slot source instead (``cluster._broker.BrokerSlots``), which leases slots from the
scheduler.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Protocol

from .._exceptions import SollolError
from .._outcome import CANCELLED, Outcome
from ..policy._balancer import SlotBalancer
from ..policy._waiters import Waiter, WaiterQueue


@dataclasses.dataclass(frozen=True)
class Grant:
    node: str
    lease: int | None = None  # the broker's lease id; None for local slots
    # Other requests were still waiting for a slot when this one was granted: there is
    # work elsewhere, so this slot must not be spent on a hedge copy.
    contended: bool = False


class SlotSource(Protocol):
    """What the router needs from a slot source."""

    async def acquire(self, avoid: frozenset[str], priority: float = 0.0,
                      spare: bool = False) -> Grant | None:
        """A slot on the best node not in ``avoid``; None: none came in time, look again."""

    def release(self, grant: Grant, outcome: Outcome) -> None:
        """Give the slot back with what became of its request."""

    def wake(self) -> None:
        """Nodes may have become free (a node restored, a pause over): serve waiters."""

    def free_slots(self) -> int:
        """Slots of the fleet nobody holds, now or as last heard (the tail rule shares
        what is left over the slots this process holds and these)."""

    def fail_waiters(self, error: Exception) -> None:
        """No node can take work any more: every waiting request fails with ``error``."""

    async def aclose(self) -> None:
        """The router closes: end what this source still has running or waiting."""


def _live(waiter: Waiter) -> bool:
    return not waiter.ticket.done()


class LocalSlots:
    """Slots of this process's balancer, handed to waiters oldest job first."""

    def free_slots(self) -> int:
        return max(0, self.balancer.usable_slots() - self.balancer.held)

    def __init__(self, balancer: SlotBalancer) -> None:
        self.balancer = balancer
        self._queue = WaiterQueue()

    async def acquire(self, avoid: frozenset[str], priority: float = 0.0,
                      spare: bool = False) -> Grant:
        """A slot; ``spare``: for a hedge copy, served only after every other request."""
        future = asyncio.get_running_loop().create_future()
        self._queue.push(future, priority=priority, spare=spare, avoid=avoid)
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
        self._queue.serve(lambda w: self.balancer.choose(w.avoid),
                          lambda w, node: w.ticket.set_result(node), live=_live,
                          exhausted=lambda: not self.balancer.has_free_slot())

    def fail_waiters(self, error: Exception) -> None:
        for waiter in self._queue.take_all():
            if not waiter.ticket.done():
                waiter.ticket.set_exception(error)

    async def aclose(self) -> None:
        self.fail_waiters(SollolError("router closed"))

    @property
    def waiting(self) -> bool:
        """Requests for new work are waiting (spare ones for hedge copies do not count)."""
        return self._queue.wanting(_live)
