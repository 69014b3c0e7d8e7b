"""Resumable parquet runs: missing parts recomputed, a killed CLI rerun, settings refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import sollol_dask as sd
from sollol_dask.testing import Faults, sim_vectors

from .conftest import MODEL, local_client

TEXTS = [f"resume text {i} " + "x" * (i % 50) for i in range(1200)]


def corpus(tmp_path: Path) -> Path:
    src = tmp_path / "corpus"
    src.mkdir()
    for f in range(2):  # two files, row groups of 100
        ids = range(f * 600, (f + 1) * 600)
        pd.DataFrame({"id": list(ids), "text": [TEXTS[i] for i in ids]}).to_parquet(
            src / f"file-{f}.parquet", row_group_size=100)
    return src


def assert_complete(out: Path) -> None:
    back = pd.read_parquet(out).sort_values("id")
    assert list(back["id"]) == list(range(len(TEXTS)))  # none missing, none duplicated
    assert np.array_equal(np.stack(back["embedding"].to_numpy()), sim_vectors(MODEL, TEXTS, 768))


@pytest.fixture(scope="module")
def client():
    with local_client(1) as c:
        yield c


def test_rerun_computes_only_missing_parts(client, sims, tmp_path):
    src, out = corpus(tmp_path), tmp_path / "out"
    node = sims("gpu")
    emb = sd.Embedder([node.url], model=MODEL)
    first = emb.embed_parquet(str(src), str(out), rows_per_part=200)
    assert (first.parts_written, first.parts_skipped, node.counters.texts) == (6, 0, 1200)
    (out / "part-00001.parquet").unlink()
    (out / "part-00004.parquet").unlink()
    (out / ".part-00002.parquet.dead.tmp").write_bytes(b"half a file from a killed run")
    second = emb.embed_parquet(str(src), str(out), rows_per_part=200)
    assert (second.parts_written, second.parts_skipped) == (2, 4)
    assert node.counters.texts == 1200 + 400  # only the two missing parts were embedded
    assert not list(out.glob(".*.tmp"))
    assert_complete(out)


def test_rerun_with_other_model_or_settings_is_refused(client, sims, tmp_path):
    src, out = corpus(tmp_path), tmp_path / "out"
    node = sims("gpu", extra_models=("other-model",))
    sd.Embedder([node.url], model=MODEL).embed_parquet(str(src), str(out), rows_per_part=600)
    with pytest.raises(sd.OutputError, match="model was .nomic-embed-text., now .other-model.*overwrite"):
        sd.Embedder([node.url], model="other-model").embed_parquet(str(src), str(out),
                                                                  rows_per_part=600)
    with pytest.raises(sd.OutputError, match="rows_per_part"):
        sd.Embedder([node.url], model=MODEL).embed_parquet(str(src), str(out), rows_per_part=300)
    report = sd.Embedder([node.url], model="other-model").embed_parquet(
        str(src), str(out), rows_per_part=600, overwrite=True)
    assert report.parts_written == 2
    assert b"other-model" in (out / "_sollol_manifest.json").read_bytes()


def test_missing_column_and_missing_input_are_clear(client, sims, tmp_path):
    src = corpus(tmp_path)
    emb = sd.Embedder([sims("gpu").url], model=MODEL)
    with pytest.raises(sd.ConfigurationError, match="column 'body' is not in .*file-0.parquet.*id, text"):
        emb.embed_parquet(str(src), str(tmp_path / "out"), column="body")
    with pytest.raises(sd.ConfigurationError, match="does not exist"):
        emb.embed_parquet(str(tmp_path / "nope"), str(tmp_path / "out"))


def test_killed_cli_run_resumes_without_loss_or_duplicates(sims, tmp_path):
    src, out = corpus(tmp_path), tmp_path / "out"
    node = sims("gpu", faults=Faults(slowdown=4.0))
    cmd = [str(Path(sys.executable).parent / "sollol-dask"), "embed", str(src), str(out),
           "--model", MODEL, "--node", node.url, "--rows-per-part", "100", "--no-progress"]
    log = open(tmp_path / "first.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 90
    while len(list(out.glob("part-*.parquet"))) < 2:  # some, not all, parts are done
        assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "first.log").read_text()
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI, its LocalCluster and its workers
    proc.wait(10)
    log.close()
    done_before = len(list(out.glob("part-*.parquet")))
    assert 2 <= done_before < 12
    node.faults.slowdown = 1.0
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{12 - done_before} written, {done_before} skipped" in rerun.stdout
    assert_complete(out)
