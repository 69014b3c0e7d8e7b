"""`sollol-dask` as a user runs it: TLS and header flags, request flags reaching the
nodes, input mistakes (one line, exit 2), a scheduler that is wrong or dies mid-run (one
clear line, exit 1, the same command resumes), a reader that goes away (`| head`), a sim
on a port in use."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sollol_dask.testing import sim_vectors
from sollol_dask.testing.sim import _handlers as sim_handlers

from ..conftest import MODEL, REPO

TOKEN = "cli-Secret-4b2a"


def sollol(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sollol_dask", *args], capture_output=True,
                          text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def corpus(path: Path, rows: int) -> list[str]:
    texts = [f"cli text {i}" for i in range(rows)]
    pd.DataFrame({"id": range(rows), "text": texts}).to_parquet(path, row_group_size=100)
    return texts


def assert_output(out: Path, texts: list[str]) -> None:
    back = pd.read_parquet(out).sort_values("id")
    assert list(back["id"]) == list(range(len(texts)))
    assert np.array_equal(np.stack(back["embedding"].to_numpy()), sim_vectors(MODEL, texts, 768))


# -- case 13: headers and TLS from the command line --------------------------------------

def test_cli_sends_headers_from_flags_and_env_to_an_https_node_with_a_ca_bundle(
        auth_sims, tls, tmp_path):
    context, cert = tls
    node = auth_sims({"X-Api-Key": TOKEN, "Authorization": "Bearer " + TOKEN * 2},
                     ssl_context=context)
    texts = corpus(tmp_path / "in.parquet", 400)
    result = sollol("embed", str(tmp_path / "in.parquet"), str(tmp_path / "out"),
                    "--model", MODEL, "--node", node.url, "--rows-per-part", "100",
                    "--header", f"X-Api-Key: {TOKEN}",
                    "--header-env", "Authorization=SOLLOL_CLI_TOKEN",
                    "--ca-bundle", str(cert), "--no-progress",
                    env={"SOLLOL_CLI_TOKEN": "Bearer " + TOKEN * 2})
    assert result.returncode == 0, result.stderr
    assert "400 embedded" in result.stdout
    assert TOKEN.lower() not in (result.stdout + result.stderr).lower()
    assert_output(tmp_path / "out", texts)


def test_cli_tls_and_header_mistakes_are_named_before_any_work(tmp_path):
    missing = tmp_path / "no-such-ca.pem"
    args = ("embed", str(tmp_path / "in.parquet"), str(tmp_path / "out"), "--model", MODEL,
            "--node", "https://127.0.0.1:9")
    result = sollol(*args, "--ca-bundle", str(missing))
    assert result.returncode == 2
    assert result.stderr == f"sollol-dask: error: --ca-bundle {missing}: no such CA bundle file\n"
    # --insecure warns (here the missing input then ends the run, before any request)
    result = sollol(*args, "--insecure")
    assert result.returncode == 2
    assert "TLS certificate verification is off for https://127.0.0.1:9" in result.stderr
    assert result.stderr.endswith(f"sollol-dask: error: input '{tmp_path / 'in.parquet'}' "
                                  "does not exist\n")
    result = sollol(*args, "--header", f"X-Api-Key {TOKEN}")
    assert result.returncode == 2
    assert "argument --header: takes 'Name: value'" in result.stderr
    assert TOKEN not in result.stderr
    result = sollol(*args, "--insecure", "--ca-bundle", str(missing))
    assert result.returncode == 2 and "not allowed with argument" in result.stderr


def test_cli_request_flags_and_a_bearer_token_from_the_environment_reach_the_node(
        auth_sims, tmp_path, monkeypatch):
    node = auth_sims({"Authorization": "Bearer " + TOKEN})
    bodies: list[dict] = []

    def record(handler) -> None:
        bodies.append(json.loads(handler.request.body))
        sim_handlers._Base.prepare(handler)  # auth_sims' check

    monkeypatch.setattr(sim_handlers.Embed, "prepare", record, raising=False)
    texts = corpus(tmp_path / "in.parquet", 60)
    # the README's proxy example: Authorization: Bearer <$EMBED_TOKEN>, read on the workers
    result = sollol("embed", str(tmp_path / "in.parquet"), str(tmp_path / "out"),
                    "--model", MODEL, "--node", node.url, "--no-progress",
                    "--header-env", "Authorization=Bearer EMBED_TOKEN", "--keep-alive", "10m",
                    "--option", "num_ctx=8192", "--no-truncate", "--batch-size", "7",
                    env={"EMBED_TOKEN": TOKEN})
    assert result.returncode == 0, result.stderr
    assert "60 embedded" in result.stdout and TOKEN not in result.stdout + result.stderr
    assert_output(tmp_path / "out", texts)
    embeds = [b for b in bodies if b.get("input")]
    assert sum(len(b["input"]) for b in embeds) == 60
    assert {(b["keep_alive"], json.dumps(b["options"]), b["truncate"]) for b in embeds} == {
        ("10m", '{"num_ctx": 8192}', False)}
    assert max(len(b["input"]) for b in embeds) <= 7


def test_cli_takes_nodes_from_sollol_nodes_spaces_and_an_openai_node_included(
        sims, tmp_path, monkeypatch):
    ollama, openai = sims("gpu"), sims("gpu")
    paths: list[tuple[int, str]] = []

    def record(handler) -> None:
        paths.append((handler.node.port, handler.request.path))

    monkeypatch.setattr(sim_handlers._Base, "prepare", record, raising=False)
    texts = corpus(tmp_path / "in.parquet", 300)
    result = sollol("embed", str(tmp_path / "in.parquet"), str(tmp_path / "out"), "--model",
                    MODEL, "--rows-per-part", "100", "--no-progress",
                    env={"SOLLOL_NODES": f"{ollama.url}  openai+{openai.url}\n"})
    assert result.returncode == 0, result.stderr
    assert_output(tmp_path / "out", texts)
    # each node was spoken to in its own protocol only (probes and embeds alike)
    assert {path for port, path in paths if port == openai.port} <= {"/v1/models",
                                                                    "/v1/embeddings"}
    assert all(path.startswith("/api/") for port, path in paths if port == ollama.port)
    assert (openai.port, "/v1/models") in paths and (ollama.port, "/api/show") in paths


# -- the last thing a user reads is one line, with the right exit code ---------------------

def test_cli_input_mistakes_exit_2_with_one_line_saying_what_to_fix(sims, tmp_path):
    node = sims("instant")
    common = ("--model", MODEL, "--node", node.url, "--no-progress")
    csv = tmp_path / "corpus.csv"
    csv.write_text("id,text\n" + "".join(f"{i},text {i}\n" for i in range(100)))
    result = sollol("embed", str(csv), str(tmp_path / "out"), *common)
    assert result.returncode == 2
    assert result.stderr == (
        f"sollol-dask: error: input {csv} is not a parquet file (it does not begin or end "
        "with parquet's PAR1 marker): convert it to parquet (e.g. "
        "pandas.read_csv(...).to_parquet(...)) or leave it out of the input\n")

    corpus(tmp_path / "in.parquet", 10)
    result = sollol("embed", str(tmp_path / "in.parquet"), str(tmp_path / "out"), *common,
                    "--column", "body")
    assert result.returncode == 2
    assert result.stderr == (
        f"sollol-dask: error: column 'body' is not in {tmp_path / 'in.parquet'} (its columns: "
        "id, text): pass --column with the text column's name\n")

    pd.DataFrame({"text": [42, 43]}).to_parquet(tmp_path / "numbers.parquet")
    # By default such rows are listed in _errors (issue 14); --on-invalid raise stops on them.
    result = sollol("embed", str(tmp_path / "numbers.parquet"), str(tmp_path / "out2"), *common,
                    "--on-invalid", "raise")
    assert result.returncode == 2, result.stderr
    ours = result.stderr[result.stderr.index("sollol-dask: error: "):].splitlines()
    assert ours[0] == (
        f"sollol-dask: error: partition part-00000.parquet ({tmp_path / 'numbers.parquet'}, "
        "rows 0..), row 0: value is int (42), not text: convert the column to strings, or "
        "pass --on-invalid null to embed it as null")
    assert all(line.startswith("  ") for line in ours[1:])  # hints, and nothing after them


def test_cli_wrong_scheduler_fails_within_seconds_naming_it(sims, tmp_path):
    corpus(tmp_path / "in.parquet", 10)
    started = time.monotonic()
    result = sollol("embed", str(tmp_path / "in.parquet"), str(tmp_path / "out"), "--model",
                    MODEL, "--node", sims("instant").url, "--scheduler", "tcp://127.0.0.1:9")
    assert time.monotonic() - started < 20  # distributed alone waits 30 s
    assert result.returncode == 1
    assert result.stderr == (
        "sollol-dask: error: cannot reach the Dask scheduler at tcp://127.0.0.1:9 within 5 s: "
        "check the address and port, that the scheduler is running and that this machine "
        "can reach it (--connect-timeout SECONDS waits longer)\n")
    result = sollol("status", "--scheduler", "127.0.0.1:9", "--connect-timeout", "1")
    assert result.returncode == 1
    assert result.stderr.startswith(
        "sollol-dask: error: cannot reach the Dask scheduler at 127.0.0.1:9 within 1 s: ")
    # a port that accepts the connection but is no scheduler (an HTTP server) is bounded too
    http_port = sims("instant").port
    started = time.monotonic()
    result = sollol("status", "--scheduler", f"127.0.0.1:{http_port}", "--connect-timeout", "1")
    assert time.monotonic() - started < 15  # distributed alone waits for the server's idle close
    assert result.returncode == 1
    assert result.stderr.startswith(f"sollol-dask: error: cannot reach the Dask scheduler at "
                                    f"127.0.0.1:{http_port} within 1 s: ")


def test_cli_output_piped_into_a_reader_that_goes_away_is_no_error(sims, tmp_path):
    texts = corpus(tmp_path / "in.parquet", 50)
    cli = subprocess.Popen([sys.executable, "-m", "sollol_dask", "embed",
                            str(tmp_path / "in.parquet"), str(tmp_path / "out"), "--model",
                            MODEL, "--node", sims("instant").url, "--no-progress"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
    cli.stdout.close()  # as `| head` does once it has its lines: the report finds no reader
    stderr = cli.stderr.read()
    assert cli.wait(300) == 0, stderr
    assert "BrokenPipe" not in stderr and "Traceback" not in stderr
    assert_output(tmp_path / "out", texts)


def test_cli_sim_on_a_port_in_use_says_so(sims):
    port = sims("instant").port
    result = sollol("sim", "--port", str(port))
    assert result.returncode == 2
    assert result.stderr == (
        f"sollol-dask: error: port {port} on 127.0.0.1 is in use (another sim or Ollama?): "
        "choose another with --port, or --port 0 for a free one\n")


# -- case 14: the scheduler dies mid-run ---------------------------------------------------

class DaskCluster:
    """`dask scheduler` + `dask worker` processes on 127.0.0.1."""

    def __init__(self, tmp_path: Path, name: str) -> None:
        exe = str(Path(sys.executable).parent / "dask")
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        sched_file = tmp_path / f"{name}.json"

        def start(*args: str) -> subprocess.Popen:
            return subprocess.Popen([exe, *args], env=env, start_new_session=True,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        self.scheduler = start("scheduler", "--host", "127.0.0.1", "--port", "0",
                               "--dashboard-address", "127.0.0.1:0",
                               "--scheduler-file", str(sched_file))
        deadline = time.monotonic() + 30
        while not sched_file.exists():
            assert time.monotonic() < deadline, "dask scheduler did not start"
            time.sleep(0.05)
        self.address = json.loads(sched_file.read_text())["address"]
        self.worker = start("worker", "--scheduler-file", str(sched_file), "--nthreads", "2",
                            "--host", "127.0.0.1", "--no-dashboard")

    def kill(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def close(self) -> None:
        self.kill(self.worker)
        self.kill(self.scheduler)


@pytest.fixture
def clusters(tmp_path):
    started: list[DaskCluster] = []

    def start(name: str) -> DaskCluster:
        started.append(DaskCluster(tmp_path, name))
        return started[-1]

    yield start
    for cluster in started:
        cluster.close()


def test_cli_scheduler_killed_mid_run_says_so_in_one_line_and_the_rerun_resumes(
        clusters, sims, tmp_path):
    node = sims("gpu")
    texts = corpus(tmp_path / "in.parquet", 1500)
    out = tmp_path / "out"
    first = clusters("first")
    command = [sys.executable, "-m", "sollol_dask", "embed", str(tmp_path / "in.parquet"),
               str(out), "--model", MODEL, "--node", node.url, "--rows-per-part", "100",
               "--no-progress", "--scheduler"]
    cli = subprocess.Popen([*command, first.address], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("part-*.parquet")):  # the run is under way
            assert time.monotonic() < deadline and cli.poll() is None, "no part was written"
            time.sleep(0.05)
        first.kill(first.scheduler)
        stdout, stderr = cli.communicate(timeout=120)
    finally:
        if cli.poll() is None:
            cli.kill()
    first.close()  # its worker may still be writing a part: gone before the rerun
    assert cli.returncode == 1, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) <= 3, stderr
    assert f"lost the connection to the Dask scheduler at {first.address}" in stderr
    assert "finished parts are kept; rerun the same command (or call) to resume" in stderr
    assert "Traceback" not in stderr
    kept = len(list(out.glob("part-*.parquet")))
    assert 1 <= kept < 15

    second = clusters("second")
    rerun = subprocess.run([*command, second.address], capture_output=True, text=True,
                           timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert rerun.returncode == 0, rerun.stderr
    assert f"{15 - kept} written, {kept} skipped (done before)" in rerun.stdout
    assert_output(out, texts)
