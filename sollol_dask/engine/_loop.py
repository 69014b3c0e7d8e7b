"""An asyncio event loop on a daemon thread, so synchronous callers (a notebook cell, a
Dask task on a worker thread) can share one async router and its connection pools."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
logger = logging.getLogger(__name__)


class LoopThread:
    def __init__(self, name: str = "sollol-dask-router") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            # Whoever stopped the loop, its tasks end and its sockets, selector and
            # self-pipe are released here, on the loop's own thread.
            pending = asyncio.all_tasks(self.loop)
            for task in pending:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T], tick: Callable[[], None] | None = None,
            every: float = 0.5) -> T:
        """Run ``coro`` on the loop and wait for it; cancel it if the caller is interrupted.
        ``tick`` is called in the caller's thread every ``every`` seconds meanwhile (a
        progress display that must be drawn by the thread that made it)."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("LoopThread.run called from its own loop: await the coroutine")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            if tick is not None:
                while not concurrent.futures.wait([future], timeout=every).done:
                    tick()
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start ``coro`` on the loop without waiting: another event loop awaits it with
        ``asyncio.wrap_future`` (cancelling that cancels ``coro``)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def shutdown(self, cleanup: Coroutine[Any, Any, Any], timeout: float = 10.0) -> None:
        """Run ``cleanup`` on the loop, then stop the loop and its thread.

        Callable from any thread, the loop's own included: a garbage-collected Embedder
        is finalized in whichever thread dropped it last.
        """
        if self.loop.is_closed() or not self._thread.is_alive():
            cleanup.close()
            return
        if threading.current_thread() is self._thread:
            task = self.loop.create_task(cleanup)
            task.add_done_callback(lambda _: self.loop.stop())
            return
        future = asyncio.run_coroutine_threadsafe(cleanup, self.loop)
        try:
            future.result(timeout)
        except Exception:  # a failed clean-up must not keep the thread running
            logger.debug("router clean-up failed", exc_info=True)
        finally:
            self.stop(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        if self.loop.is_closed():
            return
        try:
            self.loop.call_soon_threadsafe(self.loop.stop)
        except RuntimeError:  # closed meanwhile by its thread
            return
        self._thread.join(timeout)
