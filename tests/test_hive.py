"""Hive-partitioned inputs keep their partition columns in the output."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from distributed import Client, LocalCluster

import sollol_dask as sd
from sollol_dask.testing import sim_vectors

from .conftest import MODEL


def test_partition_columns_are_kept_row_by_row(sims, tmp_path):
    node = sims("gpu")
    corpus = pd.DataFrame({"id": range(6), "text": [f"text {i}" for i in range(6)],
                           "lang": ["en", "fr", "en", "de", None, "fr"],
                           "year": [2020, 2021, 2020, 2021, 2021, 2020]})
    corpus.to_parquet(tmp_path / "corpus", partition_cols=["lang", "year"])
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client, sd.Embedder([node.url], model=MODEL) as emb:
        report = emb.embed_parquet(str(tmp_path / "corpus"), str(tmp_path / "out"), client=client)
        again = emb.embed_parquet(str(tmp_path / "corpus"), str(tmp_path / "out"), client=client)
        glob = emb.embed_parquet(str(tmp_path / "corpus/lang=*/*/*.parquet"),
                                 str(tmp_path / "out2"), client=client)
    assert (report.rows, report.parts_written, again.parts_skipped) == (6, 5, 5)
    assert glob.rows == 6
    for out in ("out", "out2"):
        back = pq.read_table(tmp_path / out).sort_by("id")
        assert back.column_names == ["id", "text", "lang", "year", "embedding"]
        assert back.column("lang").to_pylist() == ["en", "fr", "en", "de", None, "fr"]
        assert back.column("year").to_pylist() == [2020, 2021, 2020, 2021, 2021, 2020]
        assert np.array_equal(np.array(back.column("embedding").to_pylist(), np.float32),
                              sim_vectors(MODEL, corpus["text"].tolist(), 768))
        assert pd.read_parquet(tmp_path / out)["lang"].notna().sum() == 5  # pandas reads it
    schema = pq.read_schema(next((tmp_path / "out").glob("part-*.parquet")))
    assert schema.field("lang").type == pa.string() and schema.field("year").type == pa.int32()


def test_a_single_file_inside_partition_directories_adds_nothing(sims, tmp_path):
    node = sims("gpu")
    pd.DataFrame({"text": ["a", "b"], "lang": ["en", "en"]}).to_parquet(
        tmp_path / "corpus", partition_cols=["lang"])
    (path,) = (tmp_path / "corpus").glob("lang=en/*.parquet")
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client, sd.Embedder([node.url], model=MODEL) as emb:
        emb.embed_parquet(str(path), str(tmp_path / "out"), client=client)
    assert pd.read_parquet(tmp_path / "out").columns.tolist() == ["text", "embedding"]
