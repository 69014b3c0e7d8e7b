"""An existing cluster: `dask scheduler` and `dask worker` processes, a worker joining mid-run."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from distributed import Client

import sollol_dask as sd
from sollol_dask.testing import Faults, sim_vectors

from .conftest import MODEL, stop_process_groups

def _dask(*args: str) -> subprocess.Popen:
    exe = Path(sys.executable).parent / "dask"
    return subprocess.Popen([str(exe), *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


@pytest.fixture
def cluster(tmp_path):
    sched_file = tmp_path / "scheduler.json"
    procs = [_dask("scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address",
                   "127.0.0.1:0", "--scheduler-file", str(sched_file))]

    def add_worker() -> None:
        procs.append(_dask("worker", "--scheduler-file", str(sched_file), "--nthreads", "1",
                           "--host", "127.0.0.1", "--no-dashboard"))

    deadline = time.monotonic() + 30
    while not sched_file.exists():  # the scheduler writes this file once it listens
        assert time.monotonic() < deadline, "dask scheduler did not start"
        time.sleep(0.05)
    address = json.loads(sched_file.read_text())["address"]
    yield address, add_worker
    stop_process_groups(list(reversed(procs)))


def test_job_on_existing_cluster_and_a_worker_joining_mid_run(cluster, sims, tmp_path):
    address, add_worker = cluster
    add_worker()
    add_worker()
    # Slowed down so the run lasts long enough for a third worker to join mid-run.
    nodes = [sims("gpu", faults=Faults(slowdown=3.0)) for _ in range(2)]
    texts = [f"cluster text {i}" for i in range(2400)]
    src = tmp_path / "in.parquet"
    pd.DataFrame({"id": range(len(texts)), "text": texts}).to_parquet(src, row_group_size=100)
    emb = sd.Embedder([n.url for n in nodes], model=MODEL)
    with Client(address) as client:
        client.wait_for_workers(2, timeout=60)
        result: dict = {}
        run = threading.Thread(target=lambda: result.setdefault(
            "report", emb.embed_parquet(str(src), str(tmp_path / "out"), rows_per_part=100)))
        run.start()
        deadline = time.monotonic() + 60
        while not list((tmp_path / "out").glob("part-*.parquet")):  # the run is under way
            assert time.monotonic() < deadline and run.is_alive()
            time.sleep(0.05)
        add_worker()
        client.wait_for_workers(3, timeout=60)
        run.join(120)
        report = result["report"]
        name = emb.register(client)
        per_worker = client.run(
            lambda dask_worker: (name in dask_worker.plugins,
                                 sum(s["texts"] for s in dask_worker.plugins[name].router.snapshot())
                                 if name in dask_worker.plugins else -1))
    assert report.parts_written == 24 and report.embedded == 2400
    assert len(per_worker) == 3
    assert all(has_plugin for has_plugin, _ in per_worker.values())
    assert all(texts > 0 for _, texts in per_worker.values()), per_worker  # the late one too
    back = pd.read_parquet(tmp_path / "out").sort_values("id")
    assert list(back["id"]) == list(range(2400))
    assert np.array_equal(np.stack(back["embedding"].to_numpy()), sim_vectors(MODEL, texts, 768))
