"""Issue 3 figures: embed_parquet throughput against capacity, and bounded worker memory."""

from __future__ import annotations

import resource
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from distributed import Client, LocalCluster

import sollol_dask as sd

from ._common import MODEL, capacity, fleet, texts, timed


def parquet_throughput(n: int = 12_000) -> dict:
    profiles = ("gpu", "cpu", "cpu")
    items = texts(n)
    with tempfile.TemporaryDirectory() as tmp, fleet(*profiles) as nodes, \
            LocalCluster(n_workers=2, threads_per_worker=2, processes=True, host="127.0.0.1",
                         dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        src = Path(tmp) / "in.parquet"
        pd.DataFrame({"id": range(n), "text": items}).to_parquet(src, row_group_size=1000)
        emb = sd.Embedder([x.url for x in nodes], model=MODEL)
        emb.check_fleet()
        emb.register(client)
        report, seconds = timed(lambda: emb.embed_parquet(str(src), str(Path(tmp) / "out"),
                                                          rows_per_part=1000, client=client))
    cap = capacity(profiles, items)
    return {"rows": n, "seconds": seconds, "rate": n / seconds, "capacity": cap,
            "efficiency": n / seconds / cap,
            "share": {k: v / n for k, v in report.per_node.items()}}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def larger_than_memory(rows: int = 480_000, dim: int = 1024, memory_limit: str = "400MB") -> dict:
    """Output (rows x dim float32) several times the workers' memory limit."""
    with tempfile.TemporaryDirectory() as tmp, fleet("instant", "instant",
                                                      extra=("--dimension", str(dim))) as nodes, \
            LocalCluster(n_workers=2, threads_per_worker=2, processes=True, host="127.0.0.1",
                         memory_limit=memory_limit, dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster) as client:
        src = Path(tmp) / "corpus"
        src.mkdir()
        chunk = 40_000
        for f in range(rows // chunk):  # written in chunks: the generator is bounded too
            ids = range(f * chunk, (f + 1) * chunk)
            table = pa.table({"id": list(ids), "text": texts(chunk, words=24, tag=f"f{f}-")})
            pq.write_table(table, src / f"part-{f}.parquet", row_group_size=2000)
        emb = sd.Embedder([x.url for x in nodes], model=MODEL)
        report, seconds = timed(lambda: emb.embed_parquet(str(src), str(Path(tmp) / "out"),
                                                          rows_per_part=4000, client=client))
        peaks = client.run(_peak_rss_mb)
        output_mb = sum(p.stat().st_size for p in (Path(tmp) / "out").glob("*.parquet")) / 2**20
    limit_mb = pd.to_numeric(memory_limit[:-2]) * 1e6 / 2**20
    return {"rows": rows, "dimension": dim, "embeddings_mb": rows * dim * 4 / 2**20,
            "output_files_mb": output_mb, "worker_memory_limit_mb": limit_mb,
            "peak_worker_rss_mb": max(peaks.values()), "seconds": seconds,
            "rate": report.embedded / seconds,
            "embeddings_over_total_worker_limit": rows * dim * 4 / 2**20 / (2 * limit_mb)}
