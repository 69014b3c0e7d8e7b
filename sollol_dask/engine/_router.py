"""The per-process embedding engine: one ``Router`` per process, shared by its threads.

One ``Router`` per process (per Dask worker, through the WorkerPlugin) runs on its own
event-loop thread, so every thread of the process shares its pools and its balancer. It
assembles the engine and is its synchronous surface and lifecycle: jobs are run by the
``JobRunner`` (``_runner``), membership is the ``Fleet``'s (who may take work), slots come
from the slot source (this process's balancer, or the cluster's broker), the pools are
the endpoints'. Clock, sleep, slot source and pool factory are constructor arguments, so
unit tests run the engine without sockets or waiting (``testing.mock``).
"""

from __future__ import annotations

import asyncio
import threading
import time
import warnings
from collections.abc import Awaitable, Callable, Sequence

import numpy as np

from .._exceptions import FleetWarning, InputError, SollolError
from .._node import Node
from .._settings import RouterSettings
from ..backends import BACKENDS
from ..policy._balancer import SlotBalancer
from ..policy._identity import Reference
from ._endpoint import Endpoint, PoolFactory
from ._fleet import Fleet
from ._chunking import Chunks
from ._job import JobResult
from ._runner import JobRunner, not_text_message
from ._loop import LoopThread
from ._fdlimit import ensure_fd_limit
from ._slots import LocalSlots, SlotSource
from ._snapshot import NodeRow, snapshot
from ._tasks import BackgroundTasks
from ._transport import open_pool


class Router:
    """Embeds lists of texts over a fleet of nodes. Thread-safe; see module docstring.

    ``slots(balancer)`` builds the slot source (default: this process's ``LocalSlots``);
    ``open_pool`` opens a node's connection pool; ``clock`` (monotonic seconds),
    ``wall_clock`` (epoch seconds: a job's priority, compared across the cluster) and
    ``sleep`` are injectable for tests; ``announce=False`` (workers) leaves warning about
    excluded nodes to the client."""

    def __init__(self, settings: RouterSettings, *, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 slots: Callable[[SlotBalancer], SlotSource] | None = None,
                 open_pool: PoolFactory = open_pool, announce: bool = True) -> None:
        self.settings = settings
        self.clock = clock
        self.wall_clock = wall_clock
        self.sleep = sleep
        self.balancer = SlotBalancer(
            [n.name for n in settings.nodes],
            [n.max_inflight or BACKENDS[n.api].default_max_inflight for n in settings.nodes],
            weights=[n.weight for n in settings.nodes],
            clock=clock,
            eject_after=settings.eject_after,
            min_timeout=settings.min_timeout,
            timeout_factor=settings.timeout_factor,
            first_timeout=settings.first_timeout,
            quarantine_after=settings.quarantine_after,
        )
        ensure_fd_limit(sum(s.cap for s in self.balancer.nodes.values()))
        self.slots = (slots or LocalSlots)(self.balancer)
        self._open_pool = open_pool
        self.endpoints = {
            n.name: Endpoint(n, settings, self._connections_for(n.name), open_pool)
            for n in settings.nodes}
        self._tasks = BackgroundTasks()  # supervisor, warm-ups, re-probes
        self.fleet = Fleet(settings, self.balancer, self.endpoints, self.slots, self._tasks,
                           clock=clock, sleep=sleep, announce=announce)
        self.jobs = JobRunner(settings, self.balancer, self.slots, self.endpoints, self.fleet,
                              clock=clock, wall_clock=wall_clock, sleep=sleep)
        self._loop: LoopThread | None = None
        self._closed = False
        self._start_lock = threading.Lock()

    def _connections_for(self, name: str) -> Callable[[], int]:
        return lambda: self.balancer.nodes[name].cap + 4

    @property
    def reference(self) -> Reference | None:
        return self.fleet.reference

    # -- synchronous surface ---------------------------------------------------------

    def embed(self, texts: Sequence[str], row_ids: Sequence | None = None, *,
              on_rows: Callable[[int], None] | None = None,
              tick: Callable[[], None] | None = None) -> np.ndarray:
        """Vectors for ``texts`` as float32 ``(len(texts), dim)``, rows in input order.
        ``on_rows(n)``: n more rows have their vectors (called on the router's thread);
        ``tick()``: called in this thread about twice a second while it waits."""
        return self._run(self.aembed(texts, row_ids, on_rows), tick)

    async def embed_async(self, texts: Sequence[str], row_ids: Sequence | None = None,
                          ) -> np.ndarray:
        """``embed`` for a caller on another event loop (a notebook's): the work runs on
        the router's loop thread, the caller's loop stays free while it waits."""
        try:
            return await asyncio.wrap_future(self._thread().submit(self.aembed(texts, row_ids)))
        finally:
            for message in self.fleet.take_warnings():
                warnings.warn(message, FleetWarning, stacklevel=3)

    def embed_rows(self, texts: Sequence, row_ids: Sequence | None = None, *,
                   record: bool = True,
                   on_rows: Callable[[int], None] | None = None,
                   find_truncated: bool = False,
                   handed_out: Callable[[], None] | None = None,
                   pending: int | None = None) -> JobResult:
        """``embed`` with the tokens the servers reported; with ``record``, a row that
        cannot be embedded for a reason of its own is returned as a row error (a zero
        row) instead of failing the call (see ``_runner``).
        ``handed_out()``: called once in this thread when every text has been sent and
        the call only waits for its last batches (not if it ends before that).
        ``pending``: rows of the same run that no worker has started (see ``_runner``)."""
        if handed_out is None:
            return self._run(self.jobs.arun(texts, row_ids, record=record, on_rows=on_rows,
                                            find_truncated=find_truncated, pending=pending))
        sent = threading.Event()  # set from the loop thread: all sent, or the call ended
        future = self._thread().submit(self.jobs.arun(texts, row_ids, record=record,
                                                      on_rows=on_rows, find_truncated=find_truncated,
                                                      on_handed_out=sent.set, pending=pending))
        future.add_done_callback(lambda _: sent.set())
        try:
            sent.wait()
            if not future.done():
                handed_out()
            return future.result()
        except BaseException:
            future.cancel()
            raise
        finally:
            for message in self.fleet.take_warnings():
                warnings.warn(message, FleetWarning, stacklevel=2)

    def count_tokens(self, texts: Sequence[str]) -> list[int | None]:
        """Each text's tokens by a node's own tokenizer (llama.cpp ``/tokenize``), special
        tokens included; None for all when no node offers one."""
        return self._run(self.jobs.count_each(list(texts)))

    def embed_chunks(self, texts: Sequence[str], row_ids: Sequence | None = None) -> Chunks:
        """Every text as the chunk policy's windows, each with its vector; a text that
        cannot be embedded raises ``InputError`` naming its row."""
        return self._run(self._embed_chunks(list(texts), row_ids))

    async def _embed_chunks(self, texts: list, row_ids: Sequence | None) -> Chunks:
        labels = list(row_ids) if row_ids is not None else list(range(len(texts)))
        for label, text in zip(labels, texts):
            if not isinstance(text, str):
                raise InputError(not_text_message(label, text), row=label)
        chunks = await self.jobs.arun_windows(texts, labels)
        if chunks.errors:
            first = chunks.errors[min(chunks.errors)]
            raise InputError(first.message, row=first.row)
        return chunks

    def check_fleet(self) -> Reference:
        """Probe every node now (if not done yet) and return the run's dimension/digest."""
        return self._run(self.fleet.ready())

    def snapshot(self) -> list[dict]:
        """Per-node counters and state as plain msgpack-able dicts (``node_rows`` typed)."""
        return [row.to_dict() for row in self.node_rows()]

    def node_rows(self) -> list[NodeRow]:
        return snapshot(self.balancer, self.fleet.nodes, self.fleet.infos,
                        self.settings.opts.model)

    def add_nodes(self, nodes: Sequence[Node]) -> list[str]:
        """Let ``nodes`` join (from any thread): each is checked (model, digest,
        dimension, warm-up) and then takes work; nodes already known are left as they
        are, with their measured speeds. Returns the names that joined."""
        return self._thread().run(self._add_nodes(list(nodes)))

    async def _add_nodes(self, nodes: list[Node]) -> list[str]:
        joined = []
        for node in nodes:
            if node.name in self.fleet.nodes:
                continue
            endpoint = Endpoint(node, self.settings, self._connections_for(node.name),
                                self._open_pool)
            cap = node.max_inflight or BACKENDS[node.api].default_max_inflight
            if self.fleet.add(node, endpoint, cap):
                joined.append(node.name)
        self.slots.wake()
        return joined

    def close(self) -> None:
        with self._start_lock:
            if self._closed:
                return
            self._closed = True
        if self._loop is not None:
            self._loop.shutdown(self._aclose())  # from any thread, a finalizer's included

    def _run(self, coro, tick: Callable[[], None] | None = None):
        """Run ``coro`` on the loop thread; then warn, in the caller's thread, of nodes
        left out meanwhile (also when the call failed: the warning says why)."""
        try:
            return self._thread().run(coro, tick)
        finally:
            for message in self.fleet.take_warnings():
                warnings.warn(message, FleetWarning, stacklevel=3)

    def _thread(self) -> LoopThread:
        with self._start_lock:  # many task threads may make the first call at once
            if self._closed:
                raise SollolError("this router is closed; create a new Embedder")
            if self._loop is None:
                self._loop = LoopThread()
            return self._loop

    async def _aclose(self) -> None:
        await self.slots.aclose()
        await self.fleet.aclose()
        await self._tasks.cancel_all()
        await asyncio.gather(*(e.aclose() for e in self.endpoints.values()),
                             return_exceptions=True)

    async def aembed(self, texts: Sequence[str], row_ids: Sequence | None = None,
                     on_rows: Callable[[int], None] | None = None) -> np.ndarray:
        """Vectors for ``texts`` (on the router's loop): see ``_runner.JobRunner``."""
        return await self.jobs.aembed(texts, row_ids, on_rows)
