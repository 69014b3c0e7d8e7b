"""The Dask paths on a real LocalCluster with 2 worker processes and sim nodes."""

from __future__ import annotations

import dask.bag as db
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import sollol_dask as sd
from sollol_dask.testing import sim_vectors

from sollol_dask.cluster._plugin import existing_router

from .conftest import MODEL, local_client

N = 600
TEXTS = [f"document {i} " + "about dask " * (i % 7) for i in range(N)]
TEXTS[7], TEXTS[8], TEXTS[9] = None, "", "   \n"
BLANK = {7, 8, 9}


def expected(texts):
    return sim_vectors(MODEL, texts, 768)


@pytest.fixture(scope="module")
def client():
    with local_client(2) as c:
        yield c


@pytest.fixture
def fleet(sims):
    return [sims("gpu"), sims("gpu")]


def frame() -> pd.DataFrame:
    return pd.DataFrame({"id": np.arange(N) * 10, "text": TEXTS, "lang": ["en"] * N},
                        index=pd.RangeIndex(N) + 1000)


def check_rows(ids, vectors_by_row):
    """Every row's vector equals the sim's function of its text; blanks are null."""
    for row_id, vector in zip(ids, vectors_by_row):
        i = row_id // 10
        if i in BLANK:
            assert vector is None or vector is pd.NA, (i, vector)
        else:
            assert np.array_equal(np.asarray(vector, np.float32), expected([TEXTS[i]])[0]), i


def lost_copies(client, emb) -> int:
    """Batches of which a copy on another node finished first, on every worker so far."""
    settings = emb.settings
    return sum(client.run(lambda dask_worker: sum(
        s["overtaken"] for s in existing_router(settings, dask_worker).snapshot())).values())


def test_embed_dataframe_is_lazy_and_exact(client, fleet):
    emb = sd.Embedder([n.url for n in fleet], model=MODEL)
    ddf = dd.from_pandas(frame(), npartitions=5)
    out = emb.embed_dataframe(ddf, column="text")
    assert sum(n.counters.texts for n in fleet) == 0  # building the graph embeds nothing
    assert out.npartitions == 5
    assert str(out.dtypes["embedding"]) == "fixed_size_list<item: float>[768][pyarrow]"
    result = out.compute()
    assert list(result.columns) == ["id", "text", "lang", "embedding"]
    assert list(result.index) == list(frame().index)  # ids aligned, order kept
    assert result["embedding"].isna().sum() == 3
    check_rows(result["id"], result["embedding"].tolist())
    # Each text embedded once, but for hedge copies that lost (they run to their end, so
    # a node never has more than its cap in flight).
    copies = lost_copies(client, emb)
    embedded = sum(n.counters.texts for n in fleet)
    assert embedded == N - 3 if copies == 0 else N - 3 <= embedded <= N - 3 + 512 * copies


def test_embed_bag_keeps_partitioning_and_order(client, fleet):
    emb = sd.Embedder([n.url for n in fleet], model=MODEL)
    bag = db.from_sequence(TEXTS, npartitions=4)
    out = emb.embed_bag(bag)
    assert out.npartitions == 4
    vectors = out.compute()
    assert len(vectors) == N
    assert all(v is None for i, v in enumerate(vectors) if i in BLANK)
    assert all(v.dtype == np.float32 for i, v in enumerate(vectors) if i not in BLANK)
    check_rows([i * 10 for i in range(N)], vectors)


def test_embed_parquet_writes_readable_atomic_parts(client, fleet, tmp_path):
    src = tmp_path / "corpus.parquet"
    frame().reset_index(drop=True).to_parquet(src, row_group_size=100)
    emb = sd.Embedder([n.url for n in fleet], model=MODEL)
    report = emb.embed_parquet(str(src), str(tmp_path / "out"), column="text", rows_per_part=200)
    assert (report.rows, report.embedded, report.null_rows) == (N, N - 3, 3)
    assert (report.parts_written, report.parts_skipped) == (3, 0)
    assert set(report.per_node) == {n.url for n in fleet}
    # Texts each node embedded: every text once, and hedge copies that lost (see above).
    copies = lost_copies(client, emb)
    embedded = sum(report.per_node.values())
    assert embedded == N - 3 if copies == 0 else N - 3 <= embedded <= N - 3 + 512 * copies
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["_sollol_manifest.json", "part-00000.parquet", "part-00001.parquet",
                     "part-00002.parquet"]
    schema = pq.read_schema(tmp_path / "out" / "part-00000.parquet")
    assert schema.field("embedding").type == pa.list_(pa.float32(), 768)
    assert b"sollol_dask" in schema.metadata and b'"dimension": 768' in schema.metadata[b"sollol_dask"]
    for back in (pd.read_parquet(tmp_path / "out"),
                 dd.read_parquet(str(tmp_path / "out")).compute()):
        back = back.sort_values("id")
        assert list(back["id"]) == list(range(0, N * 10, 10))  # no row lost or duplicated
        assert list(back.columns) == ["id", "text", "lang", "embedding"]
        check_rows(back["id"], back["embedding"].tolist())


def test_register_twice_is_a_noop_and_other_settings_get_their_own_plugin(client, fleet):
    emb = sd.Embedder([n.url for n in fleet], model=MODEL)
    name = emb.register(client)

    def router_id(dask_worker, name=name):
        return id(dask_worker.plugins[name].router)

    first = client.run(router_id)
    assert emb.register(client) == name
    sd.Embedder([n.url for n in fleet], model=MODEL).register(client)  # same settings
    assert client.run(router_id) == first
    other = sd.Embedder([n.url for n in fleet], model=MODEL, batch_size=8).register(client)
    assert other != name
    names = client.run(lambda dask_worker: sorted(k for k in dask_worker.plugins
                                                  if k.startswith("sollol-dask-")))
    assert all({name, other} <= set(v) for v in names.values())
    assert client.run(router_id) == first  # registering another config left this one alone


def test_large_embed_call_spreads_over_the_cluster(client, fleet, monkeypatch):
    from sollol_dask import _embedder

    monkeypatch.setattr(_embedder, "DISTRIBUTE_ABOVE", 100)
    monkeypatch.setattr(_embedder, "CHUNK", 64)
    texts = [f"spread {i}" for i in range(500)]
    with sd.Embedder([n.url for n in fleet], model=MODEL) as emb:
        vectors = emb.embed(texts)
        assert emb.node_stats() == [] or all(s["texts"] == 0 for s in emb.node_stats())
    assert np.array_equal(vectors, expected(texts))


def test_bad_input_names_partition_and_row(client, fleet):
    emb = sd.Embedder([n.url for n in fleet], model=MODEL)
    df = pd.DataFrame({"text": ["ok"] * 20, "count": range(20)}, index=range(100, 120))
    ddf = dd.from_pandas(df, npartitions=2)
    with pytest.raises(sd.InputError, match=r"partition (0, row 100|1, row 110): value is int"):
        emb.embed_dataframe(ddf, "count").compute()
    # A bag keeps Python objects as they are: a mixed list.
    items = ["ok"] * 10 + [42] + ["ok"] * 9
    with pytest.raises(sd.InputError, match=r"row 10: value is int"):
        emb.embed_bag(db.from_sequence(items, npartitions=1)).compute()
    out = emb.embed_bag(db.from_sequence(items, npartitions=2), on_invalid="null").compute()
    assert [v is None for v in out] == [False] * 10 + [True] + [False] * 9
    with pytest.raises(KeyError, match="column 'body' is not in the dataframe"):
        emb.embed_dataframe(ddf, "body")
    with pytest.raises(sd.ConfigurationError, match="on_invalid"):
        emb.embed_bag(db.from_sequence(items), on_invalid="skip")
