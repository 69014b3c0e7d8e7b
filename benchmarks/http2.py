"""HTTP/2 against HTTP/1.1 keep-alive through a real TLS proxy (nginx), at the router's
per-node concurrency: the product's connection pool against httpx's, with and without HTTP/2.

SOLLOL's author claimed "~30% latency reduction" from HTTP/2. Ollama speaks only cleartext
HTTP/1.1, so HTTP/2 can only ever run between the client and a TLS proxy in front of it;
this measures exactly that hop. Three clients, each reading bodies as the product does:

- ``h2``: ``HttpxPool`` with ``http2=True`` (ALPN picks h2: one connection, requests
  multiplexed as streams). This was the product's pool for ``https://`` nodes until this
  measurement retired it;
- ``h1-httpx``: the same pool with ``http2=False`` (HTTP/1.1 keep-alive, one connection per
  request in flight);
- ``h1-aiohttp``: the product's ``NodePool`` (aiohttp, HTTP/1.1 keep-alive) given the
  proxy's CA: what every node, ``https://`` ones included, is reached with now.

Needs the ``bench`` extra (``httpx[http2]``: the product itself no longer uses httpx).

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

import httpx
import orjson

from sollol_dask.backends import Reply
from sollol_dask.engine._transport import NodePool

from ._common import MODEL, fleet, texts

CLIENTS = ("h2", "h1-httpx", "h1-aiohttp")


class HttpxPool(NodePool):
    """``NodePool``'s interface and bounded body reading over an httpx client, HTTP/2 or
    HTTP/1.1 (the pool the product shipped for ``https://`` nodes before this measurement)."""

    _client: httpx.AsyncClient | None = None

    def __init__(self, *args, http2: bool, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.http2 = http2

    async def request(self, method: str, path: str, body: bytes | None,
                      timeout: float, max_bytes: int) -> Reply:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.url, http2=self.http2, verify=self.verify, trust_env=False,
                limits=httpx.Limits(max_connections=self.connections,
                                    max_keepalive_connections=self.connections))
        async with asyncio.timeout(timeout), self._client.stream(
                method, path, content=body,
                headers={"Content-Type": "application/json"} if body is not None else None,
                timeout=httpx.Timeout(timeout, connect=5.0)) as response:
            declared = response.headers.get("Content-Length")
            chunks = response.aiter_bytes()
            content = await self._read_body(
                lambda: anext(chunks, b""), int(declared) if declared else None,
                response.status_code, max_bytes)
            return Reply(response.status_code, content, path)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


def _pool(kind: str, url: str, ca: str, connections: int) -> NodePool:
    verify = ssl.create_default_context(cafile=ca)
    if kind == "h1-aiohttp":
        return NodePool("proxy", url, None, connections, verify)
    return HttpxPool("proxy", url, None, connections, verify, http2=kind == "h2")


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
                assert reply.status == 200, reply.content[:300]

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
    sys.path.insert(0, ".")
    from tests.llama import LlamaServer  # the same launchers the tests use
    from tests.tls_proxy import TlsProxy

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
