"""Row progress as a user sees it: a bar on stderr in a terminal (rows, rate, ETA), quiet
plain lines in a pipe, stdout holding only the report, embed(progress=True), and a real
Jupyter kernel with and without ipywidgets."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

import sollol_dask as sd
from sollol_dask import _progress
from sollol_dask._progress import RowProgress

from .conftest import MODEL, REPO, text_corpus

TEXTS = [f"progress text {i} " + "y" * (i % 40) for i in range(800)]


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def counts(text: str, total: int) -> list[int]:
    """Every 'N/total' count a bar or line drew, in order."""
    return [int(n) for n in re.findall(rf"(\d+)/{total}\b", text)]


# -- the display, alone --------------------------------------------------------------------

def test_a_pipe_gets_a_plain_line_every_30_seconds_with_rate_and_eta(clock):
    out = io.StringIO()
    shown = RowProgress(1000, initial=100, stream=out, clock=clock)
    assert shown.mode == "lines"
    shown.advance(200)
    clock.advance(29)
    shown.refresh()
    assert out.getvalue() == ""  # nothing before the first 30 s: short runs stay quiet
    clock.advance(1)
    shown.set_part(7, 150)
    shown.refresh()
    assert out.getvalue() == ("embedding: 450/1000 rows (45%), 11.67 rows/s, elapsed 00:30, "
                              "ETA 00:47\n")
    clock.advance(10)
    shown.refresh()  # the next line waits another 30 s
    shown.close()
    assert out.getvalue().count("\n") == 1
    assert "\r" not in out.getvalue()


def test_a_part_counted_twice_or_late_never_counts_double():
    shown = RowProgress(1000, stream=io.StringIO())
    shown.set_part(3, 300)
    shown.set_part(3, 120)  # a late event of the same part
    shown.set_part(4, 100)
    assert shown.done == 400


def test_a_failing_display_switches_itself_off_and_the_count_goes_on():
    class Broken(FakeTerminal):
        def write(self, s):
            raise OSError("stderr is gone")

    shown = RowProgress(10, stream=Broken())
    shown.advance(5)
    shown.refresh()
    shown.close()  # no exception: a progress failure never stops a run
    assert shown.mode == "off" and shown.done == 5


# -- embed(progress=True) ------------------------------------------------------------------

def test_embed_with_progress_draws_rows_as_batches_return(sims, monkeypatch):
    node = sims("gpu")
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with sd.Embedder([node.url], model=MODEL, batch_size=32) as emb:
        vectors = emb.embed(TEXTS[:400], progress=True)
    assert vectors.shape == (400, 768)
    drawn = terminal.getvalue()
    seen = counts(drawn, 400)
    assert seen[0] == 0 and seen[-1] == 400
    assert any(0 < n < 400 for n in seen), drawn  # rows as they come, not 0% then 100%
    assert "rows/s" in drawn and "<" in drawn  # rate and time left, tqdm's "[00:01<00:02"


# -- the command line: terminal versus pipe ------------------------------------------------

def corpus(tmp_path: Path) -> Path:
    return text_corpus(tmp_path / "corpus", TEXTS)


def run_in_terminal(cmd: list[str]) -> tuple[int, str, str]:
    """Run ``cmd`` with stderr on a 100-column pseudo-terminal and stdout on a pipe."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=slave)
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    stdout = proc.stdout.read().decode()
    proc.wait(30)
    return proc.returncode, stdout, seen.decode()


def test_cli_bar_in_a_terminal_quiet_in_a_pipe_and_a_resumed_run_starts_at_its_rows(
        sims, tmp_path):
    node = sims("gpu")
    src, out = corpus(tmp_path), tmp_path / "out"
    cmd = [sys.executable, "-m", "sollol_dask", "embed", str(src), str(out), "--model", MODEL,
           "--node", node.url, "--rows-per-part", "400"]
    piped = subprocess.run(cmd, capture_output=True, text=True, timeout=180,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
    assert piped.returncode == 0, piped.stderr
    assert piped.stderr == ""  # under 30 s: not one progress line, no bar redraws
    assert piped.stdout.startswith(f"output      {out}\n")
    assert "parts       2 written, 0 skipped" in piped.stdout

    (out / "part-00001.parquet").unlink()  # the rerun computes this part only
    code, stdout, stderr = run_in_terminal(cmd)
    assert code == 0, stderr
    assert stdout.startswith(f"output      {out}\n")  # stdout: the report and nothing else
    assert "%|" not in stdout and "rows/s" not in stdout
    seen = counts(stderr, 800)
    assert seen[0] == 400  # starts at the rows kept from the first run
    assert seen[-1] == 800
    assert any(400 < n < 800 for n in seen), stderr  # inside the part, not only at its end
    assert "embedding:" in stderr and "rows/s" in stderr and "\r" in stderr


# -- a real Jupyter kernel -----------------------------------------------------------------

NOTEBOOK_SETUP = """
import sollol_dask as sd
from sollol_dask.testing import SimNode
node = SimNode("gpu", load_seconds=0.0).start()
texts = [f"notebook text {i}" for i in range(300)]
"""
NOTEBOOK_EMBED = """
with sd.Embedder([node.url], model="nomic-embed-text", batch_size=32) as emb:
    vectors = emb.embed(texts, progress=True)
print("vectors", vectors.shape)
"""
NOTEBOOK_PARQUET = """
import pandas as pd
from distributed import Client, LocalCluster
pd.DataFrame({"text": texts}).to_parquet(SRC, row_group_size=50)
with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, host="127.0.0.1",
                  dashboard_address="127.0.0.1:0") as cluster, Client(cluster):
    with sd.Embedder([node.url], model="nomic-embed-text", batch_size=32) as emb:
        report = emb.embed_parquet(SRC, OUT, progress=True)
print("embedded", report.embedded)
"""


def run_notebook(tmp_path: Path, monkeypatch, block_ipywidgets: bool):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    paths = [str(REPO)]
    if block_ipywidgets:  # a package named ipywidgets that fails to import, found first
        blocker = tmp_path / "blocker" / "ipywidgets"
        blocker.mkdir(parents=True)
        (blocker / "__init__.py").write_text("raise ImportError('ipywidgets is not installed')\n")
        paths.insert(0, str(blocker.parent))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))  # the kernel inherits it
    src = tmp_path / "corpus.parquet"
    cells = [NOTEBOOK_SETUP + f"SRC, OUT = {str(src)!r}, {str(tmp_path / 'out')!r}\n",
             NOTEBOOK_EMBED, NOTEBOOK_PARQUET]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nbclient.NotebookClient(nb, timeout=240, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    return nb


def stream_text(cell, name: str) -> str:
    return "".join(o.get("text", "") for o in cell.outputs
                   if o.output_type == "stream" and o.name == name)


def test_notebook_without_ipywidgets_shows_a_text_bar_of_rows(tmp_path, monkeypatch):
    nb = run_notebook(tmp_path, monkeypatch, block_ipywidgets=True)
    embed_cell, parquet_cell = nb.cells[1], nb.cells[2]
    assert "vectors (300, 768)" in stream_text(embed_cell, "stdout")
    drawn = stream_text(embed_cell, "stderr")
    assert counts(drawn, 300)[-1] == 300 and "rows/s" in drawn
    assert "IProgress not found" not in drawn  # no tqdm warning about the missing widgets
    assert "embedded 300" in stream_text(parquet_cell, "stdout")  # the run was not cancelled
    drawn = stream_text(parquet_cell, "stderr")
    assert counts(drawn, 300)[-1] == 300 and "rows/s" in drawn, drawn
    assert not [o for c in nb.cells for o in c.outputs if o.output_type == "error"]
    assert not [o for c in nb.cells for o in c.outputs if o.output_type == "display_data"]


def test_notebook_with_ipywidgets_displays_a_widget_that_ends_at_every_row(tmp_path,
                                                                           monkeypatch):
    pytest.importorskip("ipywidgets")
    nb = run_notebook(tmp_path, monkeypatch, block_ipywidgets=False)
    for cell in nb.cells[1:]:
        widgets = [o for o in cell.outputs if o.output_type == "display_data"
                   and "application/vnd.jupyter.widget-view+json" in o.data]
        assert len(widgets) == 1, cell.outputs  # the bar is displayed, not discarded
        assert "/300" in widgets[0].data["text/plain"]
    assert "embedded 300" in stream_text(nb.cells[2], "stdout")
    # The widgets' last state, kept by nbclient: each bar ended at 300/300 rows.
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    texts = [m["state"].get("value") for m in state.values()
             if m["model_name"] == "HTMLModel"]
    assert sum("300/300" in str(t) for t in texts) == 2, texts


def test_the_kernel_check_is_false_outside_jupyter():
    assert _progress.in_jupyter_kernel() is False
