"""The demo: simulated nodes of mixed speed, a generated corpus, one embedding run."""

from __future__ import annotations

import time

from ._embedder import Embedder
from .sim import PROFILES, SimProcess

_FLEET = ("gpu", "cpu", "cpu")


def sample_texts(rows: int) -> list[str]:
    """Deterministic documents of varied length (20 to 600 characters)."""
    words = ("dask fleet node embedding vector parquet ollama batch slot cluster worker "
             "corpus search retrieval document model gpu cpu latency throughput").split()
    texts = []
    for i in range(rows):
        n = 4 + (i * 7919) % 96
        texts.append(f"doc {i}: " + " ".join(words[(i + k * k) % len(words)] for k in range(n)))
    return texts


def run_demo(rows: int = 4000) -> dict:
    texts = sample_texts(rows)
    nodes = [SimProcess(profile) for profile in _FLEET]
    try:
        print("simulated fleet: " + ", ".join(f"{p} at {n.url}" for p, n in zip(_FLEET, nodes)))
        capacity = sum(PROFILES[p].capacity(texts, 64) for p in _FLEET)
        with Embedder([n.url for n in nodes], model="nomic-embed-text") as emb:
            started = time.perf_counter()
            vectors = emb.embed(texts)
            seconds = time.perf_counter() - started
            stats = emb.node_stats()
        rate = len(texts) / seconds
        print(f"embedded {len(texts)} texts -> {vectors.shape} float32 in {seconds:.1f} s: "
              f"{rate:.0f} embeddings/s ({rate / capacity:.0%} of the fleet's {capacity:.0f}/s "
              "capacity, cold model loads included)")
        for (profile, s) in zip(_FLEET, stats):
            print(f"  {s['node']:<28} {profile:<4} texts={s['texts']:>6} "
                  f"({s['texts'] / len(texts):.0%})  requests={s['requests']}")
        return {"rows": len(texts), "seconds": seconds, "rate": rate, "capacity": capacity}
    finally:
        for node in nodes:
            node.stop()
