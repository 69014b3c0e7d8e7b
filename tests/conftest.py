from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from distributed import Client, LocalCluster

from sollol_dask.testing import SimNode

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SOLLOL_SHARED", REPO.parent / "shared"))
MODEL = "nomic-embed-text"


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sims():
    """Start in-process simulated nodes: ``sims("gpu", load_seconds=0, ...)``."""
    started: list[SimNode] = []

    def start(profile: str = "gpu", **kwargs) -> SimNode:
        kwargs.setdefault("load_seconds", 0.0)
        node = SimNode(profile, **kwargs).start()
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop()


@contextlib.contextmanager
def local_client(threads_per_worker: int = 2):
    """A real LocalCluster with 2 worker processes on 127.0.0.1, and a client to it."""
    with LocalCluster(n_workers=2, threads_per_worker=threads_per_worker, processes=True,
                      host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster) as client:
        yield client


def stop_process_groups(procs: list[subprocess.Popen]) -> None:
    """SIGTERM each process's group (started with start_new_session), SIGKILL after 10 s."""
    for proc in procs:
        os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def text_corpus(directory: Path, texts: list[str], row_group_size: int = 100) -> Path:
    """``directory`` with one parquet file of ``id`` and ``text`` columns (row groups of
    ``row_group_size``, so a part can span several)."""
    directory.mkdir()
    pd.DataFrame({"id": range(len(texts)), "text": texts}).to_parquet(
        directory / "c.parquet", row_group_size=row_group_size)
    return directory
