"""The balancer's free nodes, best first, without a scan of the fleet per choice.

A lazy heap: each change of a node that can move its rank or its eligibility (a slot
taken or given back, a new speed, health, cap) pushes a fresh entry and makes the node's
older entries stale; stale entries are dropped when they reach the top. A choice then
costs O(log n) amortized instead of O(n): at 1,024 nodes a scan per batch was most of a
router's CPU, and the broker makes one per lease.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Container
from typing import Any


class FreeHeap:
    def __init__(self, key: Callable[[Any], tuple]) -> None:
        self._key = key  # node -> heap key (smaller is better)
        self._heap: list[tuple] = []
        self._version: dict[str, int] = {}

    def touch(self, node: Any) -> None:
        """``node`` changed: its older entries are stale; a new one if it has a free slot."""
        version = self._version.get(node.name, 0) + 1
        self._version[node.name] = version
        if node.free:
            heapq.heappush(self._heap, (self._key(node), version, node.name))

    def best(self, nodes: dict[str, Any], skip: Callable[[Any], bool], take: bool) -> str | None:
        """The best free node that ``skip`` does not pass over (popped if ``take``: the
        caller then takes its slot and touches it). Skipped entries stay in the heap."""
        heap, skipped, found = self._heap, [], None
        while heap:
            _, version, name = heap[0]
            node = nodes[name]
            if version != self._version[name] or not node.free:
                heapq.heappop(heap)  # stale: the node's next change pushes it again
                continue
            if skip(node):
                skipped.append(heapq.heappop(heap))
                continue
            found = name
            if take:
                heapq.heappop(heap)
            break
        for entry in skipped:
            heapq.heappush(heap, entry)
        if len(heap) > 4 * len(nodes) + 64:
            self.rebuild(nodes.values())
        return found

    def rebuild(self, nodes) -> None:
        """One fresh entry per free node (stale entries accumulate between choices)."""
        self._heap = [(self._key(n), self._version.setdefault(n.name, 0), n.name)
                      for n in nodes if n.free]
        heapq.heapify(self._heap)


def passed_over(banned: Container[str], avoided: Container[str], now: float
                ) -> Callable[[Any], bool]:
    """A node a choice passes over: banned by the caller, avoided, or paused."""
    return lambda n: n.name in banned or n.name in avoided or n.resume_at > now
