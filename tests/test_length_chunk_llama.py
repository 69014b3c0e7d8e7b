"""The chunk length policy against the real llama-server (512 tokens of context per slot)."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import numpy as np
import pandas as pd
import pytest

import sollol_dask as sd

from sollol_dask.policy._windows import window_chars

from .conftest import REPO
from .llama import LlamaServer

pytestmark = pytest.mark.llama

WORDS = ("river stone quiet morning lantern harbor meadow copper violin orchard thunder "
         "pencil glacier saffron compass velvet ember canyon whistle marble").split()


def long_text(words: int = 3000) -> str:
    return " ".join(f"{WORDS[i % len(WORDS)]}{i % 7}" for i in range(words))


@pytest.fixture(scope="module")
def llama():
    server = LlamaServer(slots=4)  # fails (never skips) if the server cannot start
    yield server
    server.stop()


def chunk_embedder(llama, **kwargs) -> sd.Embedder:
    return sd.Embedder([sd.Node(llama.url, api="openai")], model="all-MiniLM-L6-v2",
                       length_policy="chunk", **kwargs)


def test_a_3000_word_text_is_never_refused_and_pools_its_windows(llama):
    text = long_text()
    with chunk_embedder(llama) as emb:
        emb.check_fleet()
        assert emb.router.jobs.context_length() == 512  # /props n_ctx, per slot
        pooled = emb.embed(["short one", text, "another short one"])
        table = emb.embed_chunks([text])
    with sd.Embedder([sd.Node(llama.url, api="openai")], model="all-MiniLM-L6-v2",
                     length_policy="reject") as direct:
        windows = [text[a:b] for a, b in zip(table["start"].to_pylist(),
                                             table["end"].to_pylist())]
        window_vectors = direct.embed(windows)  # refused if any window were too long
        short = direct.embed(["short one", "another short one"])
    assert table.num_rows == len(windows) >= 8
    # Sized by llama.cpp's /tokenize (3.8 characters a token on this text), not by the
    # 3-characters estimate: fewer, larger windows.
    assert max(b - a for a, b in zip(table["start"].to_pylist(), table["end"].to_pylist())) \
        > window_chars(512)
    mean = window_vectors.mean(axis=0)
    mean /= np.linalg.norm(mean)  # llama-server's vectors are normalised: so is the pool
    assert float(np.dot(pooled[1], mean)) > 0.9999
    assert abs(float(np.linalg.norm(pooled[1])) - 1.0) < 1e-5
    # Short texts go whole: their vectors are the direct ones (llama.cpp's numbers move in
    # the fourth digit with how a batch is composed, so compared by cosine).
    assert np.sum(pooled[[0, 2]] * short, axis=1).min() > 0.999


def test_chunk_rows_cover_the_text_in_order_with_overlap(llama):
    text = long_text()
    with chunk_embedder(llama) as emb:
        table = emb.embed_chunks(["tiny", text])
    rows = table["row"].to_pylist()
    assert rows[0] == 0 and set(rows[1:]) == {1}
    starts, ends = table["start"].to_pylist()[1:], table["end"].to_pylist()[1:]
    assert table["chunk"].to_pylist()[1:] == list(range(len(starts)))
    assert starts[0] == 0 and ends[-1] == len(text)
    assert all(s2 < e1 for e1, s2 in zip(ends, starts[1:]))  # each overlaps the next
    assert all(s1 < s2 for s1, s2 in zip(starts, starts[1:]))
    assert (table["start"][0].as_py(), table["end"][0].as_py()) == (0, 4)


def test_windows_planned_too_large_are_split_until_the_server_takes_them(llama):
    # A context claimed 4x too large: every planned window is refused by the server and
    # split in halves until the pieces fit; the row is still embedded, never refused.
    text = long_text(1500)
    with chunk_embedder(llama, context_length=2048) as emb:
        table = emb.embed_chunks([text])
        pooled = emb.embed([text])
    spans = list(zip(table["start"].to_pylist(), table["end"].to_pylist()))
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    assert all(b > a for a, b in spans)
    assert abs(float(np.linalg.norm(pooled[0])) - 1.0) < 1e-5


def test_the_command_line_embeds_a_3000_word_row_with_chunk_and_lists_it_under_reject(
        llama, tmp_path):
    texts = ["a short row", long_text(), "another short row"]
    pd.DataFrame({"id": range(3), "text": texts}).to_parquet(tmp_path / "in.parquet")

    def embed(policy: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "sollol_dask", "embed", str(tmp_path / "in.parquet"),
             str(tmp_path / policy), "--model", "all-MiniLM-L6-v2", "--openai-node", llama.url,
             "--length-policy", policy, "--no-progress"],
            capture_output=True, text=True, timeout=300,
            env={**os.environ, "PYTHONPATH": str(REPO)})

    chunked = embed("chunk")
    assert chunked.returncode == 0, chunked.stderr
    back = pd.read_parquet(tmp_path / "chunk").sort_values("id")
    vectors = np.stack(back["embedding"].to_numpy())
    assert vectors.shape == (3, 384) and not (tmp_path / "chunk" / "_errors").exists()
    with chunk_embedder(llama) as emb:
        assert float(np.dot(vectors[1], emb.embed(texts[1]))) > 0.999
    rejected = embed("reject")
    assert rejected.returncode == 0, rejected.stderr
    errors = pd.read_parquet(tmp_path / "reject" / "_errors")
    assert errors["row"].tolist() == [1] and errors["reason"].tolist() == ["too-long"]


def test_n_tokens_are_the_server_s_counts_and_add_up_to_the_run_s_tokens(llama, tmp_path):
    texts = [f"row {i}: " + "word " * (i % 37) for i in range(120)]
    texts[3] = None
    pd.DataFrame({"id": range(120), "text": texts}).to_parquet(tmp_path / "in.parquet")
    with sd.Embedder([sd.Node(llama.url, api="openai")], model="all-MiniLM-L6-v2") as emb:
        report = emb.embed_parquet(str(tmp_path / "in.parquet"), str(tmp_path / "out"),
                                   rows_per_part=50, n_tokens_column="n_tokens")
    out = pd.read_parquet(tmp_path / "out").sort_values("id")
    direct = [None if t is None else len(httpx.post(
        llama.url + "/tokenize", json={"content": t, "add_special": True}).json()["tokens"])
        for t in texts]
    assert [None if pd.isna(n) else int(n) for n in out["n_tokens"]] == direct
    assert report.tokens == sum(n for n in direct if n is not None)  # usage.prompt_tokens
