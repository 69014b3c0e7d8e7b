"""Issue 2 figures: the sim's serving rate, and embed() against three sim nodes."""

from __future__ import annotations

import time

import httpx
import orjson

import sollol_dask as sd

from ._common import MODEL, capacity, fleet, texts, timed


def sim_rate(seconds: float = 4.0) -> dict:
    """One `instant` sim process, one client (keep-alive pool), batches of 64 at dimension
    768, with 1 request in flight and with 2 (as the router keeps on an Ollama node)."""
    import concurrent.futures

    batch = texts(64, words=16)
    out = {}
    with fleet("instant") as (node,), httpx.Client(base_url=node.url) as client:
        for route, body in (
            ("/api/embed", {"model": MODEL, "input": batch}),
            ("/v1/embeddings", {"model": MODEL, "input": batch, "encoding_format": "base64"}),
        ):
            payload = orjson.dumps(body)
            for inflight in (1, 2):
                started = time.perf_counter()

                def loop() -> int:
                    done = 0
                    while time.perf_counter() - started < seconds:
                        response = client.post(route, content=payload)
                        assert response.status_code == 200
                        done += len(batch)
                    return done

                with concurrent.futures.ThreadPoolExecutor(inflight) as pool:
                    done = sum(pool.map(lambda _: loop(), range(inflight)))
                out[f"{route} ({inflight} in flight)"] = done / (time.perf_counter() - started)
    return {"embeddings_per_s": out, "target": 10_000}


def embed_three_nodes(n: int = 4000) -> dict:
    """Embedder.embed() in-process against gpu + cpu + cpu sim processes."""
    profiles = ("gpu", "cpu", "cpu")
    items = texts(n)
    with fleet(*profiles) as nodes:
        with sd.Embedder([x.url for x in nodes], model=MODEL) as emb:
            emb.check_fleet()
            vectors, seconds = timed(lambda: emb.embed(items))
            stats = emb.node_stats()
    cap = capacity(profiles, items)
    rate = n / seconds
    return {"texts": n, "seconds": seconds, "rate": rate, "capacity": cap,
            "efficiency": rate / cap, "share": {f"{p}-{i}": s["texts"] / n for i, (p, s) in enumerate(zip(profiles, stats))}}
