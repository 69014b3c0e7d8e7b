"""A partition's task leaves the worker's thread pool once every text of it is sent, so
the next partition fills the slots its last batches free (issue 17: a large fleet stays
busy without tuning)."""

from __future__ import annotations

import threading

import numpy as np
import pyarrow.parquet as pq
from distributed import Client, LocalCluster

import sollol_dask as sd
from sollol_dask.engine._job import Job
from sollol_dask.engine._slots import Grant
from sollol_dask.testing import Faults, sim_vectors
from sollol_dask.testing.mock import FakeOllama, vector

from .conftest import MODEL, text_corpus
from .engine_harness import Harness

A = "http://a:1"


def test_handed_out_is_called_once_when_the_last_text_goes_into_a_batch():
    calls = []
    job = Job([f"t{i}" for i in range(10)], list(range(10)), 4, max_chars=10_000,
              on_handed_out=lambda: calls.append("sent"))
    first = job.take(4)
    job.take(4)
    assert calls == []
    last = job.take(4)
    assert (last.start, last.stop) == (8, 10) and calls == ["sent"]
    job.requeue(first)  # a failed batch sent again is not a new hand-out
    assert job.take(4) is first and calls == ["sent"]


def test_embed_rows_calls_handed_out_in_the_callers_thread_before_it_returns(clock):
    texts = [f"text {i}" for i in range(40)]
    seen = []
    called = threading.Event()

    def hold_last_batch(request):
        # The batch with the last text waits (on the router's loop) until the caller has
        # been told: the call cannot end before, so the order is deterministic.
        if request.path == "/api/embed" and "text 39" in request.json()["input"]:
            assert called.wait(10), "handed_out was not called while the last batch ran"
        return None

    h = Harness({A: FakeOllama(fail=hold_last_batch)}, clock, batch_size=8)

    def handed_out():
        seen.append(threading.current_thread())
        called.set()

    try:
        result = h.router.embed_rows(texts, handed_out=handed_out)
        empty = h.router.embed_rows([], handed_out=lambda: seen.append("empty call"))
    finally:
        h.router.close()
    assert np.array_equal(result.matrix, np.stack([vector(t, 4) for t in texts]))
    assert seen == [threading.current_thread()]  # once, here; never for an empty call
    assert empty.matrix.shape == (0, 4)


def test_one_worker_thread_keeps_several_parts_in_flight(sims, tmp_path):
    # Parts of one batch each on a node of cap 4, one worker with one thread: a task that
    # held its thread until its batch came back would keep 1 request in flight at most.
    node = sims("gpu", faults=Faults(slowdown=20.0))  # a batch of 8 takes ~1.4 s
    texts = [f"handoff {i}" for i in range(48)]
    src = text_corpus(tmp_path / "in", texts, row_group_size=8)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        emb = sd.Embedder([sd.Node(node.url, max_inflight=4)], model=MODEL)
        report = emb.embed_parquet(str(src), str(tmp_path / "out"), client=client,
                                   rows_per_part=8)
    assert (report.parts_written, report.rows_written, report.embedded) == (6, 48, 48)
    assert node.counters.max_inflight == 4
    out = pq.read_table(tmp_path / "out").sort_by("id")
    assert np.array_equal(np.stack(out.column("embedding").to_numpy(zero_copy_only=False)),
                          sim_vectors(MODEL, texts, 768))


def test_batches_shrink_for_the_tail_only_when_all_jobs_under_way_are_near_their_end(clock):
    # A node measured at 0.1 s a text: its batch is 10 texts (batch_seconds=1). A job with
    # 6 texts left on a fleet of 2 slots alone is at its tail (3 texts a slot); with a
    # partition of 400 texts under way beside it, the slots have work: full batches.
    h = Harness({A: FakeOllama()}, clock, batch_size=64, batch_seconds=1.0)
    runner = h.router.jobs
    h.router.balancer.release(A, texts=10, seconds=1.0)
    ending = Job([f"e{i}" for i in range(6)], list(range(6)), 4, max_chars=10_000)
    other = Job([f"o{i}" for i in range(400)], list(range(400)), 4, max_chars=10_000)
    grant = Grant(A)
    runner.under_way = {ending}
    assert runner._batch_size(grant, ending) == 3
    runner.under_way = {ending, other}
    assert runner._batch_size(grant, ending) == 10
    h.router.close()
