"""The demo: simulated nodes of mixed speed, a generated parquet corpus, the Dask pipeline."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
from distributed import Client, LocalCluster

from ._embedder import Embedder
from .testing.sim import PROFILES, SimProcess

FLEET = ("gpu", "cpu", "cpu")


def sample_texts(rows: int) -> list[str]:
    """Deterministic documents of varied length (20 to 600 characters)."""
    words = ("dask fleet node embedding vector parquet ollama batch slot cluster worker "
             "corpus search retrieval document model gpu cpu latency throughput").split()
    texts = []
    for i in range(rows):
        n = 4 + (i * 7919) % 96
        texts.append(f"doc {i}: " + " ".join(words[(i + k * k) % len(words)] for k in range(n)))
    return texts


def write_corpus(path: Path, rows: int, files: int = 4) -> None:
    texts = sample_texts(rows)
    path.mkdir(parents=True, exist_ok=True)
    step = -(-rows // files)
    for f in range(files):
        chunk = range(f * step, min(rows, (f + 1) * step))
        pd.DataFrame({"id": list(chunk), "text": [texts[i] for i in chunk]}).to_parquet(
            path / f"corpus-{f}.parquet", row_group_size=1000, index=False)


def run_demo(rows: int = 6000) -> Path:
    """Run the demo; returns the output directory, which is kept (the report names it)
    for you to read back, while the generated corpus is deleted."""
    out = Path(tempfile.mkdtemp(prefix="sollol-demo-output-")) / "embedded"
    with tempfile.TemporaryDirectory(prefix="sollol-demo-") as tmp:
        corpus = Path(tmp) / "corpus"
        write_corpus(corpus, rows)
        texts = sample_texts(rows)
        nodes = [SimProcess(profile) for profile in FLEET]
        try:
            print("simulated fleet: " + ", ".join(f"{p} at {n.url}" for p, n in zip(FLEET, nodes)))
            capacity = sum(PROFILES[p].capacity(texts, 64) for p in FLEET)
            with LocalCluster(n_workers=2, threads_per_worker=2, processes=True,
                              host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster, \
                    Client(cluster) as client:
                print(f"Dask dashboard: {client.dashboard_link}  (fleet page: "
                      f"{client.dashboard_link.rsplit('/', 1)[0]}/sollol)")
                with Embedder([n.url for n in nodes], model="nomic-embed-text") as emb:
                    report = emb.embed_parquet(corpus, out, column="text", rows_per_part=1000,
                                               progress=True)
            report.dashboard = None  # the demo's cluster is closed: no dead link
            print()
            print(report)
            print(f"fleet capacity {capacity:.0f} embeddings/s -> {report.rate / capacity:.0%} "
                  "used (model cold loads and Dask start-up included)")
            back = pd.read_parquet(out)
            print(f"read back with pandas: {len(back)} rows, columns {list(back.columns)}")
            print(f"the output is kept in {out} (delete it when done)")
        finally:
            for node in nodes:
                node.stop()
    return out
