"""The fault matrix: embed_parquet on a real LocalCluster (worker processes) and sim nodes,
one fault per case. Every case must give exactly the fault-free output, row by row (the
sim's vectors make it checkable), with no row missing or duplicated, in bounded time.

Each case appends a line to test-artifacts/fault-matrix.json (fault, rows checked, rows
lost, seconds) for the issue's report.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import sollol_dask as sd
from sollol_dask.testing import Faults, SimNode, sim_vectors

from ..conftest import MODEL, REPO, local_client

ROWS = 1200
TEXTS = [f"reliable row {i} " + "text " * (i % 17) for i in range(ROWS)]
EXPECTED = sim_vectors(MODEL, TEXTS, 768)
REPORT = REPO / "test-artifacts" / "fault-matrix.json"


@pytest.fixture(scope="module")
def client():
    with local_client(2) as c:
        yield c


@pytest.fixture
def corpus(tmp_path) -> Path:
    src = tmp_path / "corpus.parquet"
    pd.DataFrame({"id": range(ROWS), "text": TEXTS}).to_parquet(src, row_group_size=100)
    return src


def check_output(out: Path, fault: str, seconds: float) -> None:
    back = pd.read_parquet(out).sort_values("id")
    ids = back["id"].tolist()
    lost = len(set(range(ROWS)) - set(ids))
    duplicated = len(ids) - len(set(ids))
    vectors = np.stack(back["embedding"].to_numpy())
    record(fault, rows_checked=len(ids), rows_lost=lost, duplicated=duplicated, seconds=seconds)
    assert lost == 0 and duplicated == 0
    assert np.array_equal(vectors, EXPECTED)  # identical to the fault-free run


def record(fault: str, **fields) -> None:
    REPORT.parent.mkdir(exist_ok=True)
    rows = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    rows[fault] = {k: round(v, 2) if isinstance(v, float) else v for k, v in fields.items()}
    REPORT.write_text(json.dumps(rows, indent=1))


def run(client, nodes, corpus, out, **options) -> float:
    emb = sd.Embedder([n.url for n in nodes], model=MODEL, **options)
    started = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sd.FleetWarning)
        emb.embed_parquet(str(corpus), str(out), rows_per_part=100, client=client)
    return time.monotonic() - started


def fleet(sims, *faults: Faults, **kwargs) -> list[SimNode]:
    return [sims("gpu", faults=f, **kwargs) for f in faults]


CASES = {
    "node killed mid-run": [Faults(die_after=4), Faults(), Faults()],
    "node hangs mid-run": [Faults(hang_after=4), Faults(), Faults()],
    "400 EOF (runner crash)": [Faults(eof_every=3), Faults(), Faults()],
    "400 NaN embedding": [Faults(nan_every=3), Faults(), Faults()],
    "500 burst": [Faults(burst_status=500, burst_after=2, burst_count=6), Faults(), Faults()],
    "503 burst": [Faults(burst_status=503, burst_after=2, burst_count=6), Faults(), Faults()],
    "connection resets": [Faults(reset_every=3), Faults(), Faults()],
    "malformed JSON body": [Faults(malformed_every=3), Faults(), Faults()],
    "truncated JSON body": [Faults(truncated_every=3), Faults(), Faults()],
}


@pytest.mark.parametrize("fault", list(CASES))
def test_fault(fault, client, sims, corpus, tmp_path):
    nodes = fleet(sims, *CASES[fault])
    seconds = run(client, nodes, corpus, tmp_path / "out")
    check_output(tmp_path / "out", fault, seconds)
    if "hangs" in fault:
        # A hung node's batches are copied to the others once overdue (hedging), or time
        # out after max(5 s, 10x the node's batch time): seconds, not the 120 s allowance
        # of a first request.
        assert seconds < 30


def test_node_that_comes_back_gets_work_again(client, sims, corpus, tmp_path):
    a, b = sims("gpu"), sims("gpu", faults=Faults(slowdown=3.0))
    threading.Timer(0.5, a.kill).start()
    revive = threading.Timer(2.0, a.revive)
    revive.start()
    seconds = run(client, [a, b], corpus, tmp_path / "out")
    revive.join()
    texts_after_revive = a.counters.texts
    check_output(tmp_path / "out", "node killed, comes back later", seconds)
    assert texts_after_revive > 0
    # Work it did after coming back: requests numbered after the revive exist.
    assert a.counters.requests > 0


def test_other_dimension_or_digest_is_excluded_never_mixed(client, sims, corpus, tmp_path):
    good = [sims("gpu"), sims("gpu")]
    odd = [sims("gpu", dimension=384), sims("gpu", digest_variant="q4_0")]
    seconds = run(client, good + odd, corpus, tmp_path / "out")
    check_output(tmp_path / "out", "node with other dimension / digest", seconds)
    assert all(n.counters.texts == 0 for n in odd)


def test_all_nodes_down_fails_clearly_keeps_parts_and_resumes(client, sims, corpus, tmp_path):
    nodes = fleet(sims, Faults(die_after=5), Faults(die_after=5))
    out = tmp_path / "out"
    started = time.monotonic()
    with pytest.raises(sd.NoNodeAvailableError, match="no node can embed") as info:
        run(client, nodes, corpus, out, wait_for_nodes=3.0, probe_timeout=1.0)
    failed_after = time.monotonic() - started
    assert failed_after < 60
    assert "rerun to resume" in "".join(getattr(info.value, "__notes__", []))
    kept = sorted(p.name for p in out.glob("part-*.parquet"))
    assert len(kept) < ROWS // 100
    assert not list(out.glob(".*.tmp"))
    for part in kept:  # every kept part is whole and right
        back = pd.read_parquet(out / part)
        assert np.array_equal(np.stack(back["embedding"].to_numpy()), EXPECTED[back["id"].to_numpy()])
    for node in nodes:
        node.faults.die_after = 0
        node.revive()
    seconds = run(client, nodes, corpus, out)
    check_output(out, "all nodes down, then back (resume)", failed_after + seconds)


def test_dask_worker_killed_mid_task(sims, corpus, tmp_path):
    nodes = fleet(sims, Faults(slowdown=3.0), Faults(slowdown=3.0))
    with local_client(2) as c:
        victim = sorted(c.run(os.getpid).items())[0]

        def kill_when_busy():
            while not list((tmp_path / "out").glob("part-*.parquet")):
                time.sleep(0.05)
            os.kill(victim[1], signal.SIGKILL)  # the nanny restarts it; Dask reruns its tasks

        killer = threading.Thread(target=kill_when_busy, daemon=True)
        killer.start()
        seconds = run(c, nodes, corpus, tmp_path / "out")
        killer.join(5)
    check_output(tmp_path / "out", "Dask worker process killed mid-task", seconds)


def test_output_not_writable(client, sims, corpus, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(sd.OutputError, match="cannot write to .*a-file/out.*writable"):
        run(client, [sims("gpu")], corpus, blocker / "out")


@pytest.mark.root
def test_disk_full_keeps_whole_parts_and_resumes(client, sims, corpus, tmp_path):
    """A real full disk: a 2 MiB tmpfs as the output directory (the tests run as root)."""
    full = tmp_path / "full"
    full.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(full)], check=True)
    try:
        node = sims("gpu")
        started = time.monotonic()
        with pytest.raises(sd.OutputError, match=r"No space left on device.*rerun") as info:
            run(client, [node], corpus, full)
        assert "part-" in str(info.value)
        kept = sorted(full.glob("part-*.parquet"))
        assert 0 < len(kept) < ROWS // 100
        assert not list(full.glob(".*.tmp"))  # no half-written file left behind
        for part in kept:  # what exists is whole and right
            back = pd.read_parquet(part)
            assert np.array_equal(np.stack(back["embedding"].to_numpy()),
                                  EXPECTED[back["id"].to_numpy()])
        resumed = tmp_path / "resumed"  # "free space": move the output somewhere roomy
        shutil.copytree(full, resumed)
    finally:
        subprocess.run(["umount", str(full)], check=True)
    run(client, [node], corpus, resumed)
    check_output(resumed, "disk full while writing, then resumed", time.monotonic() - started)
