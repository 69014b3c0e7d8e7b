"""The router's background tasks (warm-ups, re-probes, the supervisor), kept in one set.

Kept, so that closing the router cancels every one of them; watched, so that none ends
with an exception nobody reads ("Task exception was never retrieved") and a node it was
probing is not left "probing" for the life of the process.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine

from ..policy._limits import clip

logger = logging.getLogger(__name__)


class BackgroundTasks:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task] = set()
        self._bugs = 0

    def spawn(self, coro: Coroutine, what: str) -> asyncio.Task:
        """Run ``coro`` on the running loop; ``what`` names it in a log line if it fails."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(functools.partial(self._finished, what))
        return task

    def _finished(self, what: str, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.report_bug(what, task.exception())  # the tasks catch what they expect

    def report_bug(self, what: str, err: BaseException) -> None:
        """An exception no code path expected: its traceback once, then a debug line
        each time (a probe that hits it would repeat it every few seconds)."""
        if self._bugs == 0:
            logger.error("sollol-dask %s failed: %s", what, clip(err), exc_info=err)
        else:
            logger.debug("sollol-dask %s failed again: %s", what, clip(err))
        self._bugs += 1

    async def every(self, seconds: float, check: Callable[[], None], what: str) -> None:
        """Call ``check`` every ``seconds`` until cancelled. A failure is reported and
        the next round runs anyway: a periodic check that died would leave ejected nodes
        unprobed for the life of the process."""
        while True:
            try:
                check()
            except Exception as err:
                self.report_bug(what, err)
            await asyncio.sleep(seconds)

    async def cancel_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
