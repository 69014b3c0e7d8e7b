"""Identical texts are embedded once (``dedupe``); near a job's end, batches shrink so
every slot gets a share (``tail_size``).

Batches themselves are cut when a slot is granted (``_job.Job.take``), sized per node."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def dedupe(texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Distinct texts in first-seen order, and for each input the index of its text.

    ``unique[inverse[i]] == texts[i]`` for every ``i``: identical texts are embedded once.
    """
    index: dict[str, int] = {}
    inverse = np.empty(len(texts), dtype=np.int64)
    for i, text in enumerate(texts):
        inverse[i] = index.setdefault(text, len(index))
    return list(index), inverse


def tail_size(size: int, remaining: int, slots: int) -> int:
    """The batch to cut when ``remaining`` texts are left for ``slots`` slots fleet-wide,
    ``size`` being the node's speed-sized batch.

    Guided self-scheduling: once fewer texts are left than a full batch for every slot,
    batches shrink to an equal share, so the nodes finish together instead of one holding
    the last long batch while the others idle. Never below a quarter of ``size``, which
    keeps the per-request overhead of those last batches bounded.
    """
    share = -(-remaining // max(1, slots))
    return max(-(-size // 4), min(size, share))


# Batches expected to take less than this fraction of batch_seconds are not shrunk at a
# job's end: their tail is short anyway, and more requests would cost client CPU.
TAIL_MATTERS = 0.5


def next_batch_size(size: int, expected: float | None, contended: bool, batch_seconds: float,
                    remaining: int, slots: int) -> int:
    """The batch to cut for a granted slot: the node's speed-sized ``size`` (expected to
    take ``expected`` seconds), shrunk by ``tail_size`` when nothing else waits (maybe
    the run's tail) and a batch there is long enough for its tail to matter."""
    if not contended and (expected or 0.0) >= TAIL_MATTERS * batch_seconds:
        return tail_size(size, remaining, slots)
    return size


def left_to_send(job, under_way) -> tuple[int, bool]:
    """Texts left to send for the tail rule, and whether the run's own end is here.

    Left: the untaken texts of every job under way in this process (another job's texts
    fill the slots first), plus the rows of the run that no worker has started yet (a
    job's ``pending``: None for a call on its own). The run's end: ``job`` is one of its
    last parts (pending 0) and no job under way knows of rows behind it."""
    jobs = under_way or (job,)
    known = [j.pending for j in jobs if j.pending is not None]
    left = sum(j.untaken for j in jobs) or job.untaken
    return left + max(known, default=0), job.pending == 0 and not any(known)


def lane_count(slots: int, texts: int) -> int:
    """Concurrent lanes for a job: one per slot the fleet has (no more can be in flight),
    and no more than small batches (8 texts) in the job; at most ``MAX_LANES``, enough
    for one job to fill a fleet of 1,024 nodes of cap 2 (lanes are small coroutines)."""
    return max(1, min(slots, -(-texts // 8), MAX_LANES))


MAX_LANES = 2048
