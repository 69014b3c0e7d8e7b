"""The broker's table of slot leases: who holds which node's slot, until when.

Lease ids are chosen by the client (a worker's token and a counter), so a request sent
twice (a retried RPC) names the same leases and is answered with the same grants instead
of taking more slots. A lease expires ``ttl`` seconds after it was granted or last
renewed: a lost release, or a worker that stopped answering without leaving the cluster,
does not hold a slot forever (``distributed.Semaphore`` leases work the same way).
Workers renew the leases they hold well within ``ttl``.

Pure: the clock is injected; expiry is checked at most every ``check_every`` seconds, so
its cost per grant stays bounded however many leases are held.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator

LEASE_TTL = 30.0  # seconds a lease lives without renewal
RENEW_EVERY = LEASE_TTL / 3  # workers renew what they hold this often


@dataclasses.dataclass
class Lease:
    lease: str
    owner: str  # the worker holding it
    node: str
    expires: float


class LeaseTable:
    def __init__(self, clock: Callable[[], float], ttl: float = LEASE_TTL,
                 check_every: float = 1.0) -> None:
        self.clock = clock
        self.ttl = ttl
        self.check_every = check_every
        self._leases: dict[str, Lease] = {}
        self._next_check = 0.0

    def grant(self, lease: str, owner: str, node: str) -> Lease:
        entry = self._leases[lease] = Lease(lease, owner, node, self.clock() + self.ttl)
        return entry

    def get(self, lease: str) -> Lease | None:
        return self._leases.get(lease)

    def release(self, lease: str) -> Lease | None:
        """The lease's entry, removed; None if unknown (already returned or expired):
        returning a lease twice frees its slot once."""
        return self._leases.pop(lease, None)

    def renew(self, owner: str, leases: Iterable[str]) -> int:
        """Push back the expiry of ``owner``'s leases; how many were still held."""
        until = self.clock() + self.ttl
        renewed = 0
        for lease in leases:
            entry = self._leases.get(lease)
            if entry is not None and entry.owner == owner:
                entry.expires = until
                renewed += 1
        return renewed

    def expired(self) -> list[Lease]:
        """Leases past their expiry, removed (checked at most every ``check_every``)."""
        now = self.clock()
        if now < self._next_check:
            return []
        self._next_check = now + self.check_every
        gone = [e for e in self._leases.values() if e.expires <= now]
        for entry in gone:
            del self._leases[entry.lease]
        return gone

    def take_owner(self, owner: str) -> list[Lease]:
        """Every lease of ``owner``, removed (the worker left the cluster)."""
        gone = [e for e in self._leases.values() if e.owner == owner]
        for entry in gone:
            del self._leases[entry.lease]
        return gone

    def __len__(self) -> int:
        return len(self._leases)

    def __iter__(self) -> Iterator[Lease]:
        return iter(list(self._leases.values()))
