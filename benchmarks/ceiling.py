"""Issue 4, scenarios 5 and 6: the client's own cost per embedding, and a real server."""

from __future__ import annotations

import json
import statistics
import sys
import time

import httpx
import numpy as np

import sollol_dask as sd
from sollol_dask.backends import BACKENDS

from ._common import MODEL, texts


def _bare_parse_seconds(body: bytes, api: str, count: int, rounds: int = 9) -> float:
    """CPU seconds to parse one response into a float32 matrix, per embedding: the median
    of ``rounds`` rounds of at least 0.2 s each (this shared machine is noisy)."""
    backend = BACKENDS[api]
    per_round = []
    for _ in range(rounds):
        started, repeats = time.process_time(), 0
        while time.process_time() - started < 0.2:
            backend.parse_embed(body, count, "bench")
            repeats += 1
        per_round.append((time.process_time() - started) / repeats / count)
    return statistics.median(per_round)


def client_ceiling(seconds_per_point: float = 4.0, call_size: int = 4096) -> dict:
    """Client CPU per embedding against the bare cost of parsing the same responses.

    ``embed()`` calls of ``call_size`` texts (a partition's worth) on two ``instant`` nodes;
    the bare parse is timed on a response of the mean batch size the router sent."""
    from sollol_dask.testing import SimProcess

    out = {}
    for dim in (384, 768, 1024):
        nodes = [SimProcess("instant", "--dimension", str(dim)) for _ in range(2)]
        try:
            for api, encoding in (("ollama", "float"), ("openai", "base64")):
                node_objs = [sd.Node(n.url, api=api) for n in nodes]
                with sd.Embedder(node_objs, model=MODEL, encoding=encoding) as emb:
                    emb.check_fleet()
                    emb.embed(texts(call_size, words=16, tag=f"warm{dim}{api}-"))  # measured
                    before = {s["node"]: (s["requests"], s["texts"]) for s in emb.node_stats()}
                    done, cpu0, wall0 = 0, time.process_time(), time.perf_counter()
                    k = 0
                    while time.perf_counter() - wall0 < seconds_per_point:
                        emb.embed(texts(call_size, words=16, tag=f"{dim}{api}{k}-"))
                        done += call_size
                        k += 1
                    cpu = time.process_time() - cpu0
                    wall = time.perf_counter() - wall0
                    stats = emb.node_stats()
                requests = sum(s["requests"] - before[s["node"]][0] for s in stats)
                batch = round(done / requests)
                # Generating the texts is the benchmark's work, not the client's.
                gen0 = time.process_time()
                for j in range(k):
                    texts(call_size, words=16, tag=f"{dim}{api}{j}-")
                cpu -= time.process_time() - gen0
                path = BACKENDS[api].embed_path
                body = {"model": MODEL, "input": texts(batch, words=16, tag="sample-")}
                if api == "openai":
                    body["encoding_format"] = encoding
                sample = httpx.post(nodes[0].url + path, json=body, timeout=60).content
                parse = _bare_parse_seconds(sample, api, batch)
                key = f"dim{dim}-{'json' if encoding == 'float' else 'base64'}"
                out[key] = {"embeddings_per_s": done / wall, "mean_batch": batch,
                            "client_cpu_us_per_embedding": cpu / done * 1e6,
                            "bare_parse_us_per_embedding": parse * 1e6,
                            "overhead_ratio": cpu / done / parse}
                print(f"  {key:<16} {done / wall:8.0f}/s  batch {batch:4d}  client "
                      f"{cpu / done * 1e6:6.1f} us  parse {parse * 1e6:6.1f} us  ratio "
                      f"{cpu / done / parse:.2f}", flush=True)
        finally:
            for n in nodes:
                n.stop()
    return out


def real_llama_server(n: int = 320) -> dict:
    """A plain single-client loop (batches of 32) vs sollol_dask, each on a fresh server.

    n stays under ~350: with the shared recipe (-np 16 -c 8192) this llama-server build
    stops answering after about 350 sequences, even from the plain loop (seen here)."""
    sys.path.insert(0, ".")
    from tests.llama import LlamaServer  # the same launcher the tests use

    reference = json.loads(open(
        __import__("tests.llama", fromlist=["REFERENCE"]).REFERENCE).read())
    base = [item["text"] for item in reference["items"]]
    items = [f"{base[i % len(base)]} ({i})" for i in range(n)]
    server = LlamaServer()
    try:
        plain, started = httpx.Client(base_url=server.url, timeout=120), time.perf_counter()
        for i in range(0, n, 32):
            r = plain.post("/v1/embeddings", json={"model": "m", "input": items[i:i + 32],
                                                   "encoding_format": "base64"})
            r.raise_for_status()
        loop_rate = n / (time.perf_counter() - started)
    finally:
        server.stop()
    server = LlamaServer()  # a fresh server: no cache effects between the two
    try:
        items2 = [t + " again" for t in items]
        with sd.Embedder([sd.Node(server.url, api="openai")], model="all-MiniLM-L6-v2",
                         batch_size=32) as emb:
            emb.check_fleet()
            started = time.perf_counter()
            vectors = emb.embed(items2)
            ours = n / (time.perf_counter() - started)
        assert vectors.shape == (n, 384) and np.isfinite(vectors).all()
    finally:
        server.stop()
    print(f"  plain loop {loop_rate:.0f}/s, sollol_dask {ours:.0f}/s", flush=True)
    return {"texts": n, "plain_loop_rate": loop_rate, "sollol_dask_rate": ours,
            "ratio": ours / loop_rate}
