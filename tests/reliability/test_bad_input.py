"""Bad input, each with the behaviour the README documents."""

from __future__ import annotations

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

import sollol_dask as sd
from sollol_dask.testing import sim_vectors

from ..conftest import MODEL


def test_null_nan_empty_whitespace_rows_are_null_and_counted(sims, tmp_path):
    node = sims("gpu")
    texts = ["a", None, "", "  \t\n", "b", float("nan")]
    pd.DataFrame({"id": range(6), "text": texts}).to_parquet(tmp_path / "in.parquet")
    emb = sd.Embedder([node.url], model=MODEL)
    report = emb.embed_parquet(str(tmp_path / "in.parquet"), str(tmp_path / "out"),
                               client=None)
    assert (report.rows, report.embedded, report.null_rows) == (6, 2, 4)
    back = pd.read_parquet(tmp_path / "out").sort_values("id")
    assert back["embedding"].isna().tolist() == [False, True, True, True, False, True]
    assert node.counters.texts == 2


def test_control_characters_embed_and_lone_surrogates_name_the_row(sims):
    node = sims("gpu")
    with sd.Embedder([node.url], model=MODEL) as emb:
        weird = ["tab\tbell\x07nul\x00", "emoji \U0001F600 and accents éà", 'quote " \\ backslash']
        assert np.array_equal(emb.embed(weird), sim_vectors(MODEL, weird, 768))
        with pytest.raises(sd.InputError, match=r"row 1 is not valid Unicode text") as info:
            emb.embed(["fine", "broken \ud800 surrogate", "fine too"])
    assert info.value.row == 1


def test_empty_dataset_and_zero_row_partitions(sims, tmp_path):
    node = sims("gpu")
    emb = sd.Embedder([node.url], model=MODEL)
    pd.DataFrame({"text": pd.Series([], dtype=str)}).to_parquet(tmp_path / "empty.parquet")
    report = emb.embed_parquet(str(tmp_path / "empty.parquet"), str(tmp_path / "out"))
    assert (report.rows, report.embedded, report.parts_written) == (0, 0, 1)
    back = pd.read_parquet(tmp_path / "out")  # an empty dataset gives an empty output
    assert len(back) == 0 and list(back.columns) == ["text", "embedding"]  # with its schema
    ddf = dd.from_pandas(pd.DataFrame({"text": ["x", "y", "z", "w"]}), npartitions=2)
    ddf = ddf[ddf["text"] > "x"]  # partition 0 keeps ["y", "z"]... or none: some are empty
    out = emb.embed_dataframe(ddf, "text").compute(scheduler="sync")
    assert out["text"].tolist() == ["y", "z"]
    assert np.array_equal(np.stack(out["embedding"].to_numpy()), sim_vectors(MODEL, ["y", "z"], 768))
    empty = dd.from_pandas(pd.DataFrame({"text": pd.Series([], dtype=str)}), npartitions=1)
    assert len(emb.embed_dataframe(empty, "text").compute(scheduler="sync")) == 0


def test_too_long_text_with_truncate_false_is_a_row_error_naming_the_file_row(sims, tmp_path):
    node = sims("gpu", context_length=64)
    texts = ["ok"] * 30 + ["long " * 200] + ["ok"] * 9
    pd.DataFrame({"text": texts}).to_parquet(tmp_path / "in.parquet")
    emb = sd.Embedder([node.url], model=MODEL, truncate=False)
    report = emb.embed_parquet(str(tmp_path / "in.parquet"), str(tmp_path / "out"))
    assert (report.embedded, report.row_errors) == (39, {"too-long": 1})
    errors = pd.read_parquet(tmp_path / "out" / "_errors")
    assert errors["row"].tolist() == [30] and errors["reason"].tolist() == ["too-long"]
    assert errors["message"][0].startswith("row 30 is 1000 characters long, longer than the "
                                           "model's context of 64 tokens")


def test_duplicate_texts_are_embedded_once(sims):
    node = sims("gpu")
    with sd.Embedder([node.url], model=MODEL) as emb:
        vectors = emb.embed(["same"] * 500 + ["other"])
    assert node.counters.texts == 2 and np.array_equal(vectors[0], vectors[499])
