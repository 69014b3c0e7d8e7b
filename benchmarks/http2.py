"""HTTP/2 against HTTP/1.1 keep-alive through a real TLS proxy (nginx), at the router's
per-node concurrency, with sollol_dask's own connection pools.

SOLLOL's author claimed "~30% latency reduction" from HTTP/2. Ollama speaks only cleartext
HTTP/1.1, so HTTP/2 can only ever run between the client and a TLS proxy in front of it;
this measures exactly that hop. Three clients, each the pool the product has or could have:

- ``h2``: ``Http2Pool`` as shipped (httpx, ``http2=True``, ALPN picks h2: one connection,
  requests multiplexed as streams);
- ``h1-httpx``: the same pool with ``http2=False`` (HTTP/1.1 keep-alive, one connection per
  request in flight);
- ``h1-aiohttp``: ``Http1Pool`` (aiohttp, HTTP/1.1 keep-alive) given the proxy's CA.

Two upstreams: the ``instant`` simulated node (no model time: the protocol is everything,
the case most favourable to finding a difference) and the real ``llama-server`` with the
MiniLM GGUF (a realistic share of protocol in a request). Rounds are interleaved so that
drifts in the shared machine's load hit every client alike.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import statistics
import sys
import time

import aiohttp
import httpx
import orjson

from sollol_dask.engine._transport import Http1Pool, Http2Pool

from ._common import MODEL, fleet, texts
from .tls_proxy import TlsProxy

CLIENTS = ("h2", "h1-httpx", "h1-aiohttp")


def _pool(kind: str, url: str, ca: str, connections: int):
    if kind == "h1-aiohttp":
        pool = Http1Pool("proxy", url, None, connections, ca)
        pool._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(
            limit=connections, ssl=ssl.create_default_context(cafile=ca)), trust_env=False)
        return pool
    pool = Http2Pool("proxy", url, None, connections, ca)
    if kind == "h1-httpx":
        pool._client = httpx.AsyncClient(
            base_url=pool.url, http2=False, verify=ssl.create_default_context(cafile=ca),
            limits=httpx.Limits(max_connections=connections,
                                max_keepalive_connections=connections), trust_env=False)
    return pool


async def _run(kind: str, url: str, ca: str, path: str, body: bytes, concurrency: int,
               requests: int) -> dict:
    """``requests`` requests, ``concurrency`` in flight at a time (as the router keeps a
    node's cap full); the first ``concurrency`` requests open the connections and are not
    timed."""
    pool = _pool(kind, url, ca, concurrency)
    latencies: list[float] = []
    try:
        await asyncio.gather(*(pool.request("POST", path, body, 120, 1 << 26)
                               for _ in range(concurrency)))
        todo = iter(range(requests))

        async def lane() -> None:
            for _ in todo:
                started = time.perf_counter()
                reply = await pool.request("POST", path, body, 120, 1 << 26)
                latencies.append(time.perf_counter() - started)
                assert reply.status == 200, reply.body[:300]

        started = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    finally:
        await pool.aclose()
    return {"p50_ms": 1000 * statistics.median(latencies),
            "p95_ms": 1000 * sorted(latencies)[int(0.95 * len(latencies)) - 1],
            "requests_per_s": requests / wall}


def _measure(url: str, ca: str, path: str, body: bytes, concurrency: int, requests: int,
             rounds: int) -> dict:
    runs: dict[str, list[dict]] = {kind: [] for kind in CLIENTS}
    for _ in range(rounds):
        for kind in CLIENTS:
            runs[kind].append(asyncio.run(_run(kind, url, ca, path, body, concurrency,
                                               requests)))
    # the median round of each client, by its p50 latency
    return {kind: sorted(r, key=lambda x: x["p50_ms"])[len(r) // 2] for kind, r in runs.items()}


def _with_ratios(row: dict) -> dict:
    row["h2_over_h1_httpx_p50"] = row["h2"]["p50_ms"] / row["h1-httpx"]["p50_ms"]
    row["h2_over_h1_aiohttp_p50"] = row["h2"]["p50_ms"] / row["h1-aiohttp"]["p50_ms"]
    return row


def _negotiated(url: str, ca: str) -> dict:
    """What the proxy and httpx really agree on, so the comparison is what it says."""
    versions = {}
    for http2 in (True, False):
        with httpx.Client(http2=http2, verify=ssl.create_default_context(cafile=ca)) as client:
            versions["h2" if http2 else "h1-httpx"] = client.get(url + "/api/version").http_version
    assert versions == {"h2": "HTTP/2", "h1-httpx": "HTTP/1.1"}, versions
    return versions


def http2_vs_http1(requests: int = 400, rounds: int = 3) -> dict:
    rows = []
    with fleet("instant") as (node,), TlsProxy(node.url) as proxy:
        negotiated = _negotiated(proxy.url, proxy.ca)
        for batch in (1, 64):
            body = orjson.dumps({"model": MODEL, "input": texts(batch)})
            for concurrency in (2, 16):
                row = _with_ratios({"upstream": "sim instant (Ollama API)", "texts": batch,
                                    "concurrency": concurrency,
                                    **_measure(proxy.url, proxy.ca, "/api/embed", body,
                                               concurrency, requests, rounds)})
                rows.append(row)
                print(json.dumps(row), flush=True)
    sys.path.insert(0, ".")
    from tests.llama import LlamaServer  # the same launcher the tests use

    # 8 short texts a request, 16 timed requests after the warm-up ones: a fresh server for
    # each measurement, since this llama-server build stalls after about 350 sequences
    # (see ceiling.py).
    for concurrency in (2, 16):
        body = orjson.dumps({"model": "m", "input": texts(8), "encoding_format": "base64"})
        runs: dict[str, list[dict]] = {kind: [] for kind in CLIENTS}
        for _ in range(rounds):
            for kind in CLIENTS:
                server = LlamaServer()
                try:
                    with TlsProxy(server.url) as proxy:
                        runs[kind].append(asyncio.run(_run(
                            kind, proxy.url, proxy.ca, "/v1/embeddings", body, concurrency,
                            16)))
                finally:
                    server.stop()
        row = _with_ratios({"upstream": "llama-server MiniLM (OpenAI API)", "texts": 8,
                            "concurrency": concurrency,
                            **{k: sorted(r, key=lambda x: x["p50_ms"])[len(r) // 2]
                               for k, r in runs.items()}})
        rows.append(row)
        print(json.dumps(row), flush=True)
    return {"proxy": "nginx 1.22 (Debian), TLS 1.3, http2 + HTTP/1.1 by ALPN, keepalive upstream",
            "negotiated": negotiated, "requests_per_measurement": requests, "rounds": rounds,
            "rows": rows}
