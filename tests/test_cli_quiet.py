"""What a command-line user reads when things go wrong: each node problem once, our own
one-line error last (no worker tracebacks before it), and Ctrl-C that ends promptly and
quietly with finished parts kept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from sollol_dask.testing import Faults

from .conftest import MODEL, REPO, text_corpus

TEXTS = [f"quiet text {i} " + "z" * (i % 30) for i in range(800)]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def corpus(tmp_path: Path) -> Path:
    return text_corpus(tmp_path / "corpus", TEXTS)


def embed_cmd(src: Path, out: Path, *nodes: str) -> list[str]:
    cmd = [sys.executable, "-m", "sollol_dask", "embed", str(src), str(out), "--model", MODEL,
           "--rows-per-part", "100", "--no-progress"]
    for url in nodes:
        cmd += ["--node", url]
    return cmd


def report_line(stdout: str, node: str) -> str:
    [line] = [line for line in stdout.splitlines() if line.strip().startswith(node + " ")]
    return line


def test_a_wrong_model_node_is_reported_once_and_the_report_says_what_became_of_each_node(
        sims, tmp_path):
    good, other_digest = sims("gpu"), sims("gpu", digest_variant="q4")
    hung = sims("gpu", faults=Faults(hang_after=2))
    out = tmp_path / "out"
    run = subprocess.run(embed_cmd(corpus(tmp_path), out, good.url, other_digest.url, hung.url),
                         capture_output=True, text=True, timeout=240, env=ENV)
    assert run.returncode == 0, run.stderr
    # Once, from the client: not again from every worker, not as a log line and a warning.
    assert run.stderr.count(other_digest.url) == 1, run.stderr
    assert run.stderr.startswith(f"sollol-dask: warning: node {other_digest.url} excluded: ")
    assert "Traceback" not in run.stderr and "WARNING" not in run.stderr
    excluded = report_line(run.stdout, other_digest.url)
    assert "0 texts" in excluded and "excluded: " in excluded and "digest" in excluded
    hung_line = report_line(run.stdout, hung.url)  # why it did little
    assert "finished first elsewhere (slow or hung)" in hung_line or "timeout" in hung_line
    assert report_line(run.stdout, good.url).endswith("%")  # a node that worked: no note
    assert "dashboard" not in run.stdout  # the run's own cluster is gone: no dead link


def test_a_failed_run_ends_with_our_one_line_error_and_no_worker_traceback(sims, tmp_path):
    dying = sims("gpu", faults=Faults(die_after=3))
    env = {**ENV, "DASK_SOLLOL_DASK__WAIT_FOR_NODES": "1"}
    run = subprocess.run(embed_cmd(corpus(tmp_path), tmp_path / "out", dying.url),
                         capture_output=True, text=True, timeout=240, env=env)
    assert run.returncode == 1
    assert "Compute Failed" not in run.stderr and "Traceback" not in run.stderr, run.stderr
    lines = run.stderr.strip().splitlines()
    error = next(i for i, line in enumerate(lines) if line.startswith("sollol-dask: error: "))
    assert "no node can embed" in lines[error]
    assert all(line.startswith("  ") for line in lines[error + 1:])  # only its notes follow
    assert any("rerun to resume" in line for line in lines[error + 1:])


def test_ctrl_c_ends_the_run_promptly_and_quietly_keeping_finished_parts(sims, tmp_path):
    node = sims("gpu", faults=Faults(slowdown=4.0))
    out = tmp_path / "out"
    proc = subprocess.Popen(embed_cmd(corpus(tmp_path), out, node.url), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, env=ENV)
    deadline = time.monotonic() + 120
    while not list(out.glob("part-*.parquet")):  # the run is under way: a part is done
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.05)
    pressed = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
    stdout, stderr = proc.communicate(timeout=60)
    took = time.monotonic() - pressed
    assert proc.returncode == 130
    assert took < 3.5, f"exit took {took:.1f} s"  # not the 4 s of a worker being killed
    assert stderr == "sollol-dask: interrupted\n"  # no CancelledError, no worker tracebacks
    assert stdout == ""
    kept = list(out.glob("part-*.parquet"))
    assert kept and pd.read_parquet(kept[0]).shape[0] == 100
