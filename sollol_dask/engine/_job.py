"""One ``embed`` call's work: texts cut into batches when a slot is granted, results
placed by position, and the in-flight batches a hedge may copy."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import deque
from collections.abc import Callable

import numpy as np

from .._rows import RowError


@dataclasses.dataclass(eq=False)
class Batch:
    start: int  # positions in the job's (deduplicated) texts
    stop: int
    attempts: int = 0
    tried: set[str] = dataclasses.field(default_factory=set)
    done: bool = False
    hedged: bool = False
    # Failures where a node answered, but wrongly for this batch (a vector failing a check,
    # a 400): when they recur the batch is split to find the row (recording jobs only).
    answered: int = 0
    # node -> (request task, loop time it started) for each copy in flight
    running: dict[str, tuple[asyncio.Task, float]] = dataclasses.field(default_factory=dict)

    @property
    def size(self) -> int:
        return self.stop - self.start


@dataclasses.dataclass
class JobResult:
    """A call's vectors, rows in input order; zero rows for the row errors."""

    matrix: np.ndarray
    errors: dict[int, RowError]  # position in the call's texts -> why it has no vector
    tokens: int  # as the servers reported them (0 if none did)
    # Per row: the server cut it (truncate policy, when asked to find out); None: not asked
    truncated: np.ndarray | None = None


class Job:
    def __init__(self, texts: list[str], labels: list, dim: int, max_chars: int,
                 priority: float = 0.0,
                 on_stored: Callable[[int, int], None] | None = None,
                 on_handed_out: Callable[[], None] | None = None,
                 pending: int | None = None) -> None:
        self.texts = texts
        self.labels = labels
        self.max_chars = max_chars
        self.matrix = np.empty((len(texts), dim), np.float32)
        self._cursor = 0
        self._requeued: deque[Batch] = deque()
        self.in_flight: set[Batch] = set()
        # Slots go to the oldest job first, across the cluster: its wall-clock start time
        # (the router's injected wall clock).
        self.priority = priority
        self.lanes_looking = 0  # lanes that look for copies (see _runner._lane)
        # Rows of the same run that no worker has started yet: more work follows this
        # job, so its end is not the run's tail (see _runner._batch_size); None: a call
        # on its own (not a run's part).
        self.pending = pending
        self.record = False  # row errors are recorded, not raised (see _runner)
        self.truncate: bool | None = None  # the truncate request option; None: the run's
        self._stored = 0
        self.on_stored = on_stored  # (start, stop) of each batch stored: row progress
        # Called once, when every text is in a batch that was sent: the job then only
        # waits for its last batches (a Dask task may leave its thread pool, see _handoff).
        self.on_handed_out = on_handed_out
        self.errors: dict[int, RowError] = {}  # position -> why it has no vector
        self.tokens = 0  # as the servers reported them, winning copies only
        self.finished = asyncio.Event()  # set when every row has its vector
        if not texts:
            self.finished.set()

    def take(self, size: int) -> Batch | None:
        """The next batch: a requeued one first, else up to ``size`` texts and
        ``max_chars`` characters (at least one text)."""
        if self._requeued:
            return self._requeued.popleft()
        if self._cursor >= len(self.texts):
            return None
        start = stop = self._cursor
        chars = 0
        while stop < len(self.texts) and stop - start < size:
            chars += len(self.texts[stop])
            if stop > start and chars > self.max_chars:
                break
            stop += 1
        self._cursor = stop
        if stop == len(self.texts) and self.on_handed_out is not None:
            self.on_handed_out()
            self.on_handed_out = None
        return Batch(start, stop)

    @property
    def untaken(self) -> int:
        """Texts not handed out yet (requeued batches included)."""
        return len(self.texts) - self._cursor + sum(b.size for b in self._requeued)

    def requeue(self, batch: Batch) -> None:
        self._requeued.appendleft(batch)

    def texts_of(self, batch: Batch) -> list[str]:
        return self.texts[batch.start:batch.stop]

    def labels_of(self, batch: Batch) -> list:
        return self.labels[batch.start:batch.stop]

    def store(self, batch: Batch, vectors: np.ndarray, tokens: int | None = None) -> bool:
        """Place a batch's vectors; False if a copy of it was stored already."""
        if batch.done:
            return False
        self.matrix[batch.start:batch.stop] = vectors
        self.tokens += tokens or 0
        return self._settle(batch)

    def fail(self, batch: Batch, error: RowError) -> bool:
        """Record a one-row batch as a row error (a zero row, no vector)."""
        if batch.done:
            return False
        self.matrix[batch.start:batch.stop] = 0.0
        self.errors[batch.start] = error
        return self._settle(batch)

    def _settle(self, batch: Batch) -> bool:
        batch.done = True
        self.in_flight.discard(batch)
        self._stored += batch.size
        if self.on_stored is not None:
            self.on_stored(batch.start, batch.stop)
        if self._stored == len(self.texts):
            self.finished.set()
        return True

