"""The one waiter queue (local slots and the broker): oldest job first, hedges last."""

from __future__ import annotations

from sollol_dask.policy._waiters import WaiterQueue


def serve_all(queue: WaiterQueue, free: list[str]) -> list[str]:
    given = []
    queue.serve(lambda w: free.pop(0) if free else None,
                lambda w, node: given.append(w.ticket), live=lambda w: True,
                exhausted=lambda: not free)
    return given


def test_oldest_job_first_then_first_come_and_spare_requests_last():
    queue = WaiterQueue()
    queue.push("hedge", priority=1.0, spare=True)
    queue.push("new job", priority=5.0)
    queue.push("old job, first", priority=2.0)
    queue.push("old job, second", priority=2.0)
    assert serve_all(queue, ["n"] * 3) == ["old job, first", "old job, second", "new job"]
    assert len(queue) == 1 and not queue.wanting(lambda w: True)  # only the hedge waits
    assert serve_all(queue, ["n"]) == ["hedge"]


def test_dead_waiters_are_dropped_and_avoid_is_passed_to_the_choice():
    queue = WaiterQueue()
    queue.push("gone")
    queue.push("here", avoid=frozenset({"a"}))
    chosen = []
    queue.serve(lambda w: chosen.append(w.avoid) or "b", lambda w, node: None,
                live=lambda w: w.ticket != "gone")
    assert chosen == [frozenset({"a"})] and len(queue) == 0


def test_discard_and_take_all():
    queue = WaiterQueue()
    first = queue.push("a")
    queue.push("b")
    queue.discard(first)
    assert [w.ticket for w in queue.take_all()] == ["b"] and len(queue) == 0
