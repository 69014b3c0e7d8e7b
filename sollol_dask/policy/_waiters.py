"""Requests waiting for a slot, served oldest job first: the one queue behind both slot
sources (a process's own, and the cluster's broker on the scheduler).

Order: requests for new work before "spare" ones (hedge copies, which only use a slot
nobody else wants), then by job priority (its start time: the oldest job first, across
the cluster), then first come, first served. Pure: a waiter's ticket is opaque here
(an asyncio future for both callers), so the order is tested without a loop.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
from collections.abc import Callable, Iterator
from typing import Any


@dataclasses.dataclass(order=True)  # ordered (and equal) by the first three fields only
class Waiter:
    spare: bool
    priority: float
    arrival: int
    ticket: Any = dataclasses.field(compare=False)  # what the caller settles on a grant
    avoid: frozenset[str] = dataclasses.field(compare=False, default=frozenset())
    banned: frozenset[str] = dataclasses.field(compare=False, default=frozenset())
    owner: str = dataclasses.field(compare=False, default="")  # the broker's worker


class WaiterQueue:
    def __init__(self) -> None:
        self._waiters: list[Waiter] = []
        self._arrivals = itertools.count()

    def push(self, ticket: Any, *, priority: float = 0.0, spare: bool = False,
             avoid: frozenset[str] = frozenset(), banned: frozenset[str] = frozenset(),
             owner: str = "") -> Waiter:
        waiter = Waiter(bool(spare), priority, next(self._arrivals), ticket, frozenset(avoid),
                        frozenset(banned), owner)
        bisect.insort(self._waiters, waiter)
        return waiter

    def discard(self, waiter: Waiter) -> None:
        if waiter in self._waiters:
            self._waiters.remove(waiter)

    def serve(self, choose: Callable[[Waiter], str | None], give: Callable[[Waiter, str], None],
              *, live: Callable[[Waiter], bool],
              exhausted: Callable[[], bool] = lambda: False) -> list[Waiter]:
        """Offer slots in order: ``choose`` names a node for a waiter (or None: it keeps
        waiting), ``give`` hands it over. Waiters for which ``live`` is False are dropped
        (``live`` may settle them). Once ``exhausted()`` says no slot is free anywhere, the
        rest keep waiting unexamined. Returns the waiters served."""
        kept: list[Waiter] = []
        served: list[Waiter] = []
        for i, waiter in enumerate(self._waiters):
            if not live(waiter):
                continue
            node = choose(waiter)
            if node is None:
                kept.append(waiter)
                if exhausted():
                    kept.extend(self._waiters[i + 1:])
                    break
                continue
            give(waiter, node)
            served.append(waiter)
        self._waiters = kept
        return served

    def take_all(self) -> list[Waiter]:
        """Empty the queue (to fail every waiter)."""
        waiters, self._waiters = self._waiters, []
        return waiters

    def wanting(self, live: Callable[[Waiter], bool]) -> bool:
        """Requests for new work are waiting (spare ones, for hedge copies, do not count)."""
        return any(not w.spare and live(w) for w in self._waiters)

    def __iter__(self) -> Iterator[Waiter]:
        return iter(list(self._waiters))

    def __len__(self) -> int:
        return len(self._waiters)
