"""Which in-flight batch deserves a copy on a node that has a slot and nothing to do.

Near a job's end a fast node may idle while a slow one holds the last batches; a copy of
such a batch on the fast node ends the job sooner (the first answer wins; the other copy
runs out and keeps its slot until it is answered, see ``_runner``). Pure: times come in,
a choice comes out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

# A lane that found nothing worth copying looks again after at most this many seconds.
RECHECK_HEDGE = 0.5

# Lanes of one job that look for copies once it has nothing left to send; the others end.
# A job has a lane per slot of the fleet (up to 2,048): on a large fleet every one of them
# took a spare lease every RECHECK_HEDGE to scan the job's batches (at 1,024 nodes ~85%
# of the broker's leases sent nothing). More than this many copies at once rarely pays.
HEDGE_LANES = 8


def may_look_for_copies(lanes_looking: int) -> bool:
    """Whether one more lane of a job with nothing left to send should look for copies."""
    return lanes_looking < HEDGE_LANES


def hedge_target(in_flight: Iterable[Any], fast: str, now: float,
                 expected_seconds: Callable[[str, int], float | None],
                 ) -> tuple[Any | None, float | None]:
    """The in-flight batch a copy on ``fast`` would finish much sooner, if any; else
    in how many seconds one may qualify (None: never, so the lane can stop).

    A batch has ``done``, ``hedged``, ``size`` and ``running`` (node -> (request, the
    time it was sent)); ``expected_seconds(node, texts)`` is the balancer's estimate.

    A copy pays off when the holder's expected remaining time exceeds 1.5x the time
    ``fast`` needs. A holder not measured yet, or overdue (a batch sent before its node
    was measured keeps that request's long timeout), is judged by how long the batch
    has run: it qualifies once it has run 1.5x what ``fast`` needs."""
    best, best_gain, later = None, 0.0, None
    for batch in in_flight:
        if batch.done or batch.hedged:
            continue
        mine = expected_seconds(fast, batch.size)
        if mine is None or fast in batch.running:
            # Another node may take a copy: keep looking.
            later = RECHECK_HEDGE if later is None else min(later, RECHECK_HEDGE)
            continue
        for node, (_, started) in batch.running.items():
            theirs = expected_seconds(node, batch.size)
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
