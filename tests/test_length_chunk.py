"""The chunk length policy on simulated Ollama nodes: long texts embedded as windows and
pooled, in-process and across a real LocalCluster (exact rows and vectors)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import sollol_dask as sd
from sollol_dask._cli._embed_args import embedder_kwargs
from sollol_dask.cli import build_parser
from sollol_dask.policy._pooling import pool_mean
from sollol_dask.policy._windows import plan_windows, window_chars
from sollol_dask.testing import sim_vectors

from .conftest import MODEL, local_client

CONTEXT = 64  # tokens; the sim counts one per 4 characters and refuses more (truncate=false)


def long_text(i: int, words: int = 120) -> str:
    return " ".join(f"long{i}-{j}" for j in range(words))


def expected(text: str, context: int = CONTEXT) -> np.ndarray:
    """The documented result: the sim's vectors of the planned windows, mean, normalised."""
    windows = plan_windows(text, window_chars(context))
    return pool_mean(sim_vectors(MODEL, [text[a:b] for a, b in windows], 768), normalized=True)


def test_long_texts_are_pooled_windows_and_short_ones_go_whole(sims):
    node = sims("gpu", context_length=CONTEXT)
    texts = ["short", long_text(1), "also short", long_text(2, 400)]
    with sd.Embedder([node.url], model=MODEL, length_policy="chunk") as emb:
        vectors = emb.embed(texts)
        table = emb.embed_chunks(texts)
    assert np.array_equal(vectors[[0, 2]], sim_vectors(MODEL, ["short", "also short"], 768))
    assert np.array_equal(vectors[1], expected(texts[1]))
    assert np.array_equal(vectors[3], expected(texts[3]))
    assert node.counters.errors == 0  # no window was refused
    rows = table["row"].to_pylist()
    assert rows.count(0) == rows.count(2) == 1 and rows.count(3) > rows.count(1) > 1
    spans = table.to_pandas()
    for row, text in enumerate(texts):
        mine = spans[spans["row"] == row]
        assert mine["start"].iloc[0] == 0 and mine["end"].iloc[-1] == len(text)
        assert mine["chunk"].tolist() == list(range(len(mine)))
        assert np.array_equal(np.stack(mine["embedding"].to_numpy()),
                              sim_vectors(MODEL, [text[a:b] for a, b in
                                                  zip(mine["start"], mine["end"])], 768))


def test_windows_the_server_refuses_are_split_until_it_takes_them(sims):
    node = sims("gpu", context_length=CONTEXT)
    text = long_text(7, 300)
    # A context claimed 4x too large: every planned window is refused, then halved.
    with sd.Embedder([node.url], model=MODEL, length_policy="chunk",
                     context_length=4 * CONTEXT) as emb:
        table = emb.embed_chunks([text])
        vector = emb.embed(text)
    spans = list(zip(table["start"].to_pylist(), table["end"].to_pylist()))
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    assert max(b - a for a, b in spans) <= CONTEXT * 4  # what the sim accepts
    assert node.counters.errors > 0  # refusals happened, and were absorbed
    assert np.array_equal(vector, pool_mean(
        sim_vectors(MODEL, [text[a:b] for a, b in spans], 768), normalized=True))


def test_a_window_refused_at_every_size_names_the_row(sims):
    node = sims("gpu", context_length=3)  # 12 characters: less than the smallest window
    with sd.Embedder([node.url], model=MODEL, length_policy="chunk") as emb:
        with pytest.raises(sd.InputError) as info:
            emb.embed(["ok", "x" * 40])
    assert info.value.row == 1
    assert str(info.value).startswith("row 1: its window at characters ")


def test_truncate_contradicting_the_length_policy_is_refused():
    with pytest.raises(sd.ConfigurationError) as info:
        sd.Embedder(["http://127.0.0.1:9"], model=MODEL, truncate=True, length_policy="chunk")
    assert str(info.value) == ("truncate=True contradicts length_policy='chunk': give one "
                               "of them")
    with pytest.raises(sd.ConfigurationError) as info:
        sd.Embedder(["http://127.0.0.1:9"], model=MODEL, length_policy="split")
    assert str(info.value) == ("length_policy must be one of truncate, reject, chunk, not "
                               "'split'")


def test_the_command_line_asks_for_chunk_and_a_context():
    args = build_parser().parse_args(["embed", "in", "out", "--model", MODEL, "--node",
                                      "http://127.0.0.1:9", "--length-policy", "chunk",
                                      "--context-length", "512"])
    kwargs = embedder_kwargs(args)
    assert (kwargs["length_policy"], kwargs["context_length"], kwargs["truncate"]) == \
        ("chunk", 512, False)


@pytest.fixture(scope="module")
def client():
    with local_client() as client:
        yield client


def test_embed_parquet_with_chunk_across_a_local_cluster(client, sims, tmp_path):
    nodes = [sims("gpu", context_length=CONTEXT) for _ in range(2)]
    texts = [long_text(i) if i % 50 == 7 else f"row {i}" for i in range(600)]
    texts[99] = None  # a null stays a null vector
    pd.DataFrame({"id": range(600), "text": texts}).to_parquet(tmp_path / "in.parquet")
    emb = sd.Embedder([n.url for n in nodes], model=MODEL, length_policy="chunk")
    report = emb.embed_parquet(str(tmp_path / "in.parquet"), str(tmp_path / "out"),
                               client=client, rows_per_part=250)
    assert (report.rows, report.embedded, report.null_rows, report.row_errors) == \
        (600, 599, 1, {})
    out = pd.read_parquet(tmp_path / "out").sort_values("id")
    assert out["id"].tolist() == list(range(600))
    for i, (text, vector) in enumerate(zip(texts, out["embedding"])):
        if text is None:
            assert vector is None
        elif i % 50 == 7:
            assert np.array_equal(vector, expected(text)), i
        else:
            assert np.array_equal(vector, sim_vectors(MODEL, [text], 768)[0]), i
    assert sum(n.counters.errors for n in nodes) == 0


def test_chunk_rows_of_a_dask_dataframe_across_a_local_cluster(client, sims):
    import dask.dataframe as dd

    node = sims("gpu", context_length=CONTEXT)
    texts = [long_text(i) if i % 10 == 3 else f"row {i}" for i in range(100)]
    texts[50] = None  # no text: no chunk rows
    frame = pd.DataFrame({"text": texts}, index=pd.RangeIndex(1000, 1100))
    with sd.Embedder([node.url], model=MODEL, length_policy="chunk") as emb:
        lazy = emb.embed_chunks(dd.from_pandas(frame, npartitions=4), "text")
        out = lazy.compute()
        local = emb.embed_chunks([t for t in texts if t is not None])
    assert list(out.columns) == ["row", "chunk", "start", "end", "embedding"]
    assert sorted(set(out["row"])) == [1000 + i for i in range(100) if i != 50]
    assert len(out) == local.num_rows == 99 + sum(
        len(plan_windows(t, window_chars(CONTEXT))) - 1 for t in texts if t and t.startswith("long"))
    for row, mine in out.groupby("row"):
        text = texts[row - 1000]
        assert mine["chunk"].tolist() == list(range(len(mine)))
        assert mine["start"].iloc[0] == 0 and mine["end"].iloc[-1] == len(text)
        assert np.array_equal(np.stack(mine["embedding"].to_numpy()),
                              sim_vectors(MODEL, [text[a:b] for a, b in
                                                  zip(mine["start"], mine["end"])], 768))


def test_embed_chunks_needs_the_chunk_policy(sims):
    node = sims("gpu")
    with sd.Embedder([node.url], model=MODEL) as emb:
        with pytest.raises(sd.ConfigurationError) as info:
            emb.embed_chunks(["text"])
    assert str(info.value).startswith("embed_chunks needs length_policy='chunk' (this "
                                      "Embedder's is 'truncate')")


def test_truncate_policy_flags_exactly_the_rows_the_server_cut(client, sims, tmp_path):
    nodes = [sims("gpu", context_length=CONTEXT) for _ in range(2)]
    texts = [long_text(i) if i % 40 == 11 else f"row {i}" for i in range(300)]
    texts[5] = None
    pd.DataFrame({"id": range(300), "text": texts}).to_parquet(tmp_path / "in.parquet")
    emb = sd.Embedder([n.url for n in nodes], model=MODEL)  # truncate: the default
    report = emb.embed_parquet(str(tmp_path / "in.parquet"), str(tmp_path / "out"),
                               client=client, rows_per_part=100, truncated_column="cut")
    assert (report.embedded, report.null_rows, report.row_errors) == (299, 1, {})
    out = pd.read_parquet(tmp_path / "out").sort_values("id")
    assert list(out.columns) == ["id", "text", "embedding", "cut"]
    long_rows = [i for i in range(300) if i % 40 == 11]
    assert out.loc[out["cut"], "id"].tolist() == long_rows
    for i in long_rows:  # what the sim embeds of a text it cuts
        assert np.array_equal(out["embedding"].iloc[i],
                              sim_vectors(MODEL, [texts[i][:CONTEXT * 4]], 768)[0])
    with pytest.raises(sd.ConfigurationError) as info:
        emb.embed_parquet(str(tmp_path / "in.parquet"), str(tmp_path / "o2"), client=client,
                          truncated_column="text")
    assert str(info.value) == ("truncated_column='text' is already a column of the input "
                               "or the output: choose another name")
