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


def test_wrong_collection_types_say_what_to_pass(sims):
    import dask.bag as db

    node = sims("gpu")
    pdf = pd.DataFrame({"text": ["a", "b"]})
    ddf = dd.from_pandas(pdf, npartitions=1)
    with sd.Embedder([node.url], model=MODEL) as emb:
        with pytest.raises(TypeError) as info:
            emb.embed_dataframe(pdf)
        assert str(info.value) == (
            "embed_dataframe takes a dask DataFrame, not a pandas DataFrame: pass "
            "dask.dataframe.from_pandas(df, npartitions=N), or for a small frame "
            "emb.embed(df[column].tolist())")
        with pytest.raises(TypeError, match=r"not a dask Series: pass series.to_frame\(\)"):
            emb.embed_dataframe(ddf["text"])
        with pytest.raises(TypeError) as info:
            emb.embed_bag(["a", "b"])
        assert str(info.value) == (
            "embed_bag takes a dask Bag, not list: pass dask.bag.from_sequence(texts, "
            "npartitions=N), or for texts in memory call emb.embed(texts)")
        with pytest.raises(TypeError, match=r"not a dask Series: pass series.to_bag\(\)"):
            emb.embed_bag(ddf["text"])
        with pytest.raises(TypeError, match="not a dataframe: use embed_dataframe"):
            emb.embed_bag(ddf)
        # the right types still work, and nothing was sent for the wrong ones
        assert node.counters.requests == 0
        assert emb.embed_bag(db.from_sequence(["a"])).compute()[0].shape == (768,)


def test_numbers_in_an_object_column_are_refused_not_embedded_as_text(sims):
    # dd.from_pandas turns object columns into pyarrow strings: 3 would arrive as "3".
    node = sims("gpu")
    pdf = pd.DataFrame({"text": ["a", "b", 3, 4.5, None, "c"]}, dtype=object)
    ddf = dd.from_pandas(pdf, npartitions=2)  # rows 0-2 and 3-5
    assert str(ddf["text"].dtype) == "string"  # what Dask made of it
    emb = sd.Embedder([node.url], model=MODEL)
    for value, partition, row, shown in ((3, 0, 2, "int (3)"), (4.5, 1, 3, "float (4.5)")):
        one = pdf.where(pdf.map(lambda v: isinstance(v, str) or v is None or v == value), "x")
        with pytest.raises(sd.InputError) as info:
            emb.embed_dataframe(dd.from_pandas(one, npartitions=2), "text").compute(
                scheduler="sync")
        assert str(info.value) == (
            f"partition {partition}, row {row}: value is {shown}, not text: convert the column "
            "to strings, or pass on_invalid='null' to embed it as null")
        assert (info.value.partition, info.value.row) == (partition, row)

    out = emb.embed_dataframe(ddf, "text", on_invalid="null").compute(scheduler="sync")
    assert out["embedding"].isna().tolist() == [False, False, True, True, True, False]
    assert np.array_equal(np.stack(out["embedding"][[0, 1, 5]].to_numpy()),
                          sim_vectors(MODEL, ["a", "b", "c"], 768))
    assert out["text"].tolist()[:2] == ["a", "b"]  # the user's column is left as Dask made it
    # A column that really holds the text "3" is text, and is embedded.
    texts = dd.from_pandas(pd.DataFrame({"text": ["3", "4.5"]}), npartitions=1)
    out = emb.embed_dataframe(texts, "text").compute(scheduler="sync")
    assert np.array_equal(np.stack(out["embedding"].to_numpy()),
                          sim_vectors(MODEL, ["3", "4.5"], 768))
    emb.close()
