"""What users of the Ollama client, LiteLLM and Ray Data expect: one text in, one vector
out; an awaitable embed; instruction prefixes; a batch function for map_batches."""

from __future__ import annotations

import asyncio
import pickle

import dask
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import sollol_dask as sd
from sollol_dask.testing import sim_vectors

from sollol_dask.cluster._plugin import _local_routers, existing_router, plugin_name

from .conftest import MODEL, local_client

TEXTS = [f"passage {i}" for i in range(40)]


def test_one_text_gives_one_vector(sims):
    node = sims("gpu")
    with sd.Embedder([node.url], model=MODEL) as emb:
        vector = emb.embed("a question")
    assert vector.shape == (768,) and vector.dtype == np.float32
    assert np.array_equal(vector, sim_vectors(MODEL, ["a question"], 768)[0])


def test_aembed_keeps_the_callers_loop_free(sims):
    node = sims("cpu")  # slow enough: ~25 ms per text, one slot
    with sd.Embedder([node.url], model=MODEL) as emb:
        emb.check_fleet()

        async def main():
            ticks = 0
            done = asyncio.Event()

            async def ticker():  # runs only if the loop is not blocked by aembed
                nonlocal ticks
                while not done.is_set():
                    ticks += 1
                    await asyncio.sleep(0)

            task = asyncio.create_task(ticker())
            vectors, one = await asyncio.gather(emb.aembed(TEXTS), emb.aembed("a question"))
            done.set()
            await task
            return vectors, one, ticks

        vectors, one, ticks = asyncio.run(main())
    assert np.array_equal(vectors, sim_vectors(MODEL, TEXTS, 768))
    assert np.array_equal(one, sim_vectors(MODEL, ["a question"], 768)[0])
    assert ticks > 100  # the caller's loop kept running while the nodes worked


def test_prefix_from_the_embedder_the_config_or_the_call(sims):
    node = sims("gpu")
    doc = sim_vectors(MODEL, ["search_document: " + t for t in TEXTS[:3]], 768)
    query = sim_vectors(MODEL, ["search_query: what"], 768)[0]
    with sd.Embedder([node.url], model=MODEL, prefix="search_document: ") as emb:
        assert np.array_equal(emb.embed(TEXTS[:3]), doc)
        assert np.array_equal(emb.embed("what", prefix="search_query: "), query)
        assert np.array_equal(emb.embed(["x"], prefix=""), sim_vectors(MODEL, ["x"], 768))
    with dask.config.set({"sollol-dask.prefix": "search_document: "}):
        emb = sd.Embedder([node.url], model=MODEL)
    with emb:
        assert emb.settings.opts.prefix == "search_document: "
        assert np.array_equal(emb.embed(TEXTS[:3]), doc)
    with pytest.raises(sd.ConfigurationError, match="prefix must be text such as "
                                                    "'search_document: ', not int"):
        sd.Embedder([node.url], model=MODEL, prefix=3)


def test_batch_function_on_pandas_and_arrow_batches(sims):
    node = sims("gpu")
    texts = ["first", None, "  ", "fourth"]
    expected = sim_vectors(MODEL, ["search_query: first", "search_query: fourth"], 768)
    with sd.Embedder([node.url], model=MODEL) as emb:
        fn = emb.batch_function(column="text", output_column="vec", prefix="search_query: ")
        fn = pickle.loads(pickle.dumps(fn))  # it travels to Dask or Ray workers
        out = fn(pd.DataFrame({"id": [10, 11, 12, 13], "text": texts}, index=[5, 6, 7, 8]))
        table = fn(pa.table({"id": [10, 11, 12, 13], "text": texts}))
        with pytest.raises(KeyError, match=r"column 'text' is not in the batch \(columns: "
                                           r"\['body'\]\): pass batch_function\(column=...\)"):
            fn(pd.DataFrame({"body": ["x"]}))
    assert isinstance(out, pd.DataFrame) and list(out.columns) == ["id", "text", "vec"]
    assert list(out.index) == [5, 6, 7, 8] and list(out["id"]) == [10, 11, 12, 13]
    assert out["vec"].isna().tolist() == [False, True, True, False]
    assert np.array_equal(np.stack([out["vec"][5], out["vec"][8]]), expected)
    assert isinstance(table, pa.Table) and table.column_names == ["id", "text", "vec"]
    assert table.schema.field("vec").type == pa.list_(pa.float32(), 768)
    rows = table.column("vec").to_pylist()
    assert rows[1] is None and rows[2] is None
    assert np.array_equal(np.array([rows[0], rows[3]], np.float32), expected)


def test_batch_function_in_map_partitions_on_a_cluster(sims):
    import dask.dataframe as dd

    node = sims("gpu")
    pdf = pd.DataFrame({"text": TEXTS})
    with local_client() as client, sd.Embedder([node.url], model=MODEL) as emb:
        fn = emb.batch_function()
        meta = pdf.head(0).assign(embedding=pd.Series([], dtype=pd.ArrowDtype(
            pa.list_(pa.float32(), 768))))
        out = dd.from_pandas(pdf, npartitions=4).map_partitions(fn, meta=meta).compute()
        # The workers' routers (from the WorkerPlugin) did the work, not this process.
        settings = emb.settings
        texts = client.run(lambda dask_worker: sum(
            s["texts"] for s in existing_router(settings, dask_worker).snapshot()))
    assert sum(texts.values()) == len(TEXTS) and plugin_name(settings) not in _local_routers
    assert np.array_equal(np.stack(out["embedding"].tolist()), sim_vectors(MODEL, TEXTS, 768))


def test_prefix_is_in_the_parquet_metadata_and_the_run_identity(sims, tmp_path):
    import orjson
    import pyarrow.parquet as pq
    from distributed import Client, LocalCluster

    node = sims("gpu")
    pd.DataFrame({"text": TEXTS[:5]}).to_parquet(tmp_path / "in.parquet")
    src, dst = str(tmp_path / "in.parquet"), str(tmp_path / "out")
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client, \
            sd.Embedder([node.url], model=MODEL, prefix="search_document: ") as emb:
        emb.embed_parquet(src, dst, client=client)
        assert emb.embed_parquet(src, dst, client=client).parts_skipped == 1
        with pytest.raises(sd.OutputError) as info:
            emb.embed_parquet(src, dst, client=client, prefix="")
        emb.embed_parquet(src, dst, client=client, prefix="search_query: ", overwrite=True)
    assert str(info.value) == (
        f'{dst} holds output of another run (prefix was "search_document: ", now null): pass '
        "overwrite=True (--overwrite) to start over, or choose another output directory")
    back = pq.read_table(dst)
    assert orjson.loads(back.schema.metadata[b"sollol_dask"])["prefix"] == "search_query: "
    assert np.array_equal(np.stack(back.column("embedding").to_numpy(zero_copy_only=False)),
                          sim_vectors(MODEL, ["search_query: " + t for t in TEXTS[:5]], 768))
