"""Row progress of a run on a Dask cluster: tasks count their rows as batches come back,
the client that waits for them shows the total.

Each task running on a worker sends its running row count, at most once every
``ROWS_EVERY`` seconds, as a Dask event on the run's own topic (``worker.log_event``);
the scheduler forwards it to the client, which subscribed to that topic
(``client.subscribe_topic``). A finished task counts its whole rows from its future, so
a lost or late event never leaves the count short; a task retried after a worker died
never counts twice (running totals, the largest kept). Nothing here can fail a run: a
lost event only makes the display lag.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

import distributed
from distributed import get_worker

from .._progress import DRAW_EVERY, RowProgress

logger = logging.getLogger(__name__)

ROWS_EVERY = 1.0  # seconds between a task's row events (two a second would be plenty)


def rows_topic(job: str) -> str:
    """The event topic of one run's row counts (its own: runs never mix)."""
    return f"sollol-dask-rows-{job}"


class TaskRows:
    """``on_rows`` for the router inside one task: adds up rows and sends the running
    total of ``unit`` (a part or chunk number) to ``topic``, throttled. Off a worker
    (threaded scheduler) it counts and sends nothing."""

    def __init__(self, topic: str, unit: int, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.topic = topic
        self.unit = unit
        self.clock = clock
        self.done = 0
        self._sent_at = float("-inf")
        self._lock = threading.Lock()  # the router's thread counts; the task's thread too
        try:
            self._worker = get_worker()
        except ValueError:
            self._worker = None

    def __call__(self, rows: int) -> None:
        with self._lock:
            self.done += rows
            now = self.clock()
            if now - self._sent_at < ROWS_EVERY:
                return
            self._sent_at = now
            done = self.done
        if self._worker is not None:
            self._worker.log_event(self.topic, {"unit": self.unit, "done": done})


def wait_for(client, futures: Sequence, units: Sequence[int], rows: Sequence[int], *,
             topic: str | None, total: int, initial: int = 0) -> None:
    """Wait until every future is done; with ``topic``, show rows done meanwhile.

    ``units[i]`` and ``rows[i]``: the unit number and row count of ``futures[i]``.
    ``initial``: rows done before this run (a resumed run starts there).
    """
    if topic is None:
        distributed.wait(futures)
        return
    progress = RowProgress(total, initial=initial)
    try:
        client.subscribe_topic(topic, lambda event: _count(progress, event))
    except Exception:  # an old scheduler, a closed comm: the display shows finished parts
        logger.info("could not subscribe to row progress events", exc_info=True)
    try:
        while True:
            try:
                distributed.wait(futures, timeout=DRAW_EVERY)
                break
            except TimeoutError:
                pass
            _count_finished(progress, futures, units, rows)
            progress.refresh()
        _count_finished(progress, futures, units, rows)
    finally:
        try:
            client.unsubscribe_topic(topic)
        except Exception:
            logger.debug("unsubscribing from %s failed", topic, exc_info=True)
        progress.close()


def _count(progress: RowProgress, event) -> None:
    _, msg = event
    progress.set_part(msg["unit"], msg["done"])


def _count_finished(progress: RowProgress, futures: Sequence, units: Sequence[int],
                    rows: Sequence[int]) -> None:
    for future, unit, count in zip(futures, units, rows):
        if future.status == "finished":
            progress.set_part(unit, count)
