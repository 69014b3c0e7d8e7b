"""Embedders end cleanly: a dropped one releases its thread, sockets and supervisor; a
closed one says so instead of quietly starting again."""

from __future__ import annotations

import gc
import os
import threading
import weakref

import numpy as np
import pytest

import sollol_dask as sd
from sollol_dask.testing import SimProcess, sim_vectors

from ..conftest import MODEL


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def sim_process():
    # Its own process: the sockets counted in /proc/self/fd are then only the client's.
    with SimProcess("instant", "--load-seconds", "0") as node:
        yield node


def test_dropped_embedders_release_threads_fds_and_supervisors(sim_process):
    gc.collect()
    threads, fds = threading.active_count(), _open_fds()
    routers = []
    for i in range(50):
        emb = sd.Embedder([sim_process.url], model=MODEL)  # never closed, as in a notebook
        texts = [f"text {i}", "shared"]
        assert np.array_equal(emb.embed(texts), sim_vectors(MODEL, texts, 768))
        routers.append(weakref.ref(emb.router))
    del emb
    gc.collect()
    names = sorted(t.name for t in threading.enumerate())
    assert threading.active_count() == threads, names
    assert _open_fds() == fds
    # A router whose supervisor still ran would be kept alive by its event loop.
    assert [r for r in routers if r() is not None] == []


def test_embedder_dropped_on_its_own_loop_thread_is_closed(sim_process):
    """A finalizer may run on the router's own thread (the last reference dropped there):
    closing must not deadlock or raise."""
    emb = sd.Embedder([sim_process.url], model=MODEL)
    emb.embed(["x"])
    loop_thread = emb.router._loop
    done = threading.Event()
    box = [emb]
    del emb
    loop_thread.loop.call_soon_threadsafe(lambda: (box.clear(), done.set()))
    assert done.wait(10)
    loop_thread._thread.join(10)
    assert not loop_thread._thread.is_alive() and loop_thread.loop.is_closed()


def test_embed_after_close_says_the_embedder_is_closed(sim_process):
    with sd.Embedder([sim_process.url], model=MODEL) as emb:
        emb.embed(["x"])
    threads = threading.active_count()
    for call in (lambda: emb.embed(["x"]), emb.check_fleet, lambda: emb.router):
        with pytest.raises(sd.SollolError, match="this Embedder is closed; create a new one"):
            call()
    assert threading.active_count() == threads  # no new router was started
    emb.close()  # closing twice is fine
    assert emb.node_stats() == []

