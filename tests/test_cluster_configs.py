"""cluster-configs/: each way of starting Dask is checked, for real where this machine can
run it (sshd), else against the official schemas (see cluster-configs/README.md)."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest

from .conftest import MODEL, REPO
from .sshd import Sshd

CONFIGS = REPO / "cluster-configs"


def _corpus(directory, n: int = 600):
    directory.mkdir()
    for f in range(3):
        ids = range(f * n // 3, (f + 1) * n // 3)
        pd.DataFrame({"text": [f"document {i} on a cluster over ssh" for i in ids]}
                     ).to_parquet(directory / f"docs-{f}.parquet")
    return directory


@pytest.mark.root
@pytest.mark.timeout(300)
def test_ssh_config_embeds_through_a_real_sshd(tmp_path, sims):
    sshd = Sshd(tmp_path)
    nodes = [sims("gpu"), sims("gpu")]
    corpus = _corpus(tmp_path / "corpus")
    # The hosts run this interpreter; PYTHONPATH (a worktree's package) goes along.
    remote = sys.executable
    if os.environ.get("PYTHONPATH"):
        remote = f"env PYTHONPATH={os.environ['PYTHONPATH']} {sys.executable}"
    try:
        run = subprocess.run(
            [sys.executable, str(CONFIGS / "ssh" / "embed_over_ssh.py"),
             "--hosts", "127.0.0.1,127.0.0.1", "--ssh-port", str(sshd.port),
             "--ssh-key", str(sshd.key), "--known-hosts", "none", "--remote-python", remote,
             "--scheduler-port", "0", "--dashboard-port", "0", "--model", MODEL,
             *[a for node in nodes for a in ("--node", node.url)],
             str(corpus), str(tmp_path / "out")],
            capture_output=True, text=True, timeout=240)
        accepted = sshd.accepted()
    finally:
        sshd.stop()
    assert run.returncode == 0, run.stderr[-3000:]
    assert "/sollol page: http://" in run.stdout and "/metrics" in run.stdout
    assert "600 in corpus; 600 written now, 600 embedded" in run.stdout, run.stdout
    out = pd.read_parquet(tmp_path / "out")
    assert len(out) == 600 and out["embedding"].map(len).eq(768).all()
    # The scheduler and the worker were both started through sshd with the test's key.
    assert accepted >= 2
