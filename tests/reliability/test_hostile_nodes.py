"""Broken and hostile nodes: "nothing lost" must survive them (issue 11, cases 5, 7-11).

Each case runs real nodes on 127.0.0.1: a sim node with a fault a user may simulate too
(``Faults``), or a sim behind ``tests.hostile.HostileNode`` for what no server should do.
Where rows are embedded, every row is compared with the sim's vectors.
"""

from __future__ import annotations

import gc
import logging
import re
import threading
import time
import warnings

import msgpack
import numpy as np
import orjson
import psutil
import pyarrow.parquet as pq
import pytest
from aiohttp import web

import sollol_dask as sd
from sollol_dask.dashboard._view import FleetView
from sollol_dask.testing import Faults, sim_vectors

from ..conftest import MODEL
from ..hostile import HTML_PAGE, MIB, HostileNode, always, answer, embedding_texts

TEXTS = [f"hostile row {i}: " + "word " * (i % 11) for i in range(200)]
EXPECTED = sim_vectors(MODEL, TEXTS, 768)


@pytest.fixture
def hostile(sims):
    """``hostile()``: a HostileNode in front of a fresh gpu sim node; stopped after."""
    started: list[HostileNode] = []

    def start(upstream=None) -> HostileNode:
        node = HostileNode((upstream or sims("gpu")).url).start()
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop()


def wait_until(predicate, seconds: float, what: str):
    """Poll a condition the router reaches on its own (re-probes run on a timer)."""
    deadline = time.monotonic() + seconds
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return value


def stats(emb: sd.Embedder) -> dict[str, dict]:
    return {s["node"]: s for s in emb.node_stats()}


def embed_exactly_until(emb: sd.Embedder, predicate, seconds: float, what: str) -> int:
    """Embed TEXTS again and again (every row checked) until ``predicate()``; the calls."""
    deadline, calls = time.monotonic() + seconds, 0
    while True:
        assert np.array_equal(emb.embed(TEXTS), EXPECTED)
        calls += 1
        if predicate():
            return calls
        assert time.monotonic() < deadline, f"timed out waiting for {what}"


class PeakRSS:
    """This process's peak resident memory while the block runs, sampled every 5 ms."""

    def __enter__(self) -> PeakRSS:
        self.process = psutil.Process()
        self.before = self.peak = self.process.memory_info().rss
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._done.wait(0.005):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.before


# -- case 5: vectors that are wrong ---------------------------------------------------

@pytest.mark.parametrize("api,fault,why", [
    ("ollama", Faults(zero_vectors_every=1), "returned an all-zero vector (batch item 0)"),
    ("ollama", Faults(unnormalized_every=1), "the fleet's vectors have norm 1 (normalized)"),
    ("openai", Faults(bad_index_every=1), "returned rows with index values [0, 0, 0, 0"),
], ids=["all-zero", "unnormalized", "openai-duplicate-index"])
def test_wrong_vectors_are_refused_and_the_node_quarantined(sims, api, fault, why):
    bad, good = sims("gpu", faults=fault), sims("gpu")
    nodes = [sd.Node(bad.url, api=api), sd.Node(good.url, api=api)]
    with sd.Embedder(nodes, model=MODEL, batch_size=16) as emb:
        embed_exactly_until(emb, lambda: stats(emb)[bad.url]["state"] == "quarantined", 20,
                            "the bad node's quarantine")
        state = stats(emb)[bad.url]
        requests = bad.counters.requests
        assert np.array_equal(emb.embed(TEXTS), EXPECTED)
    assert state["reason"].startswith("quarantined for 300 s: 3 bad answers in a row")
    assert why in state["reason"]
    assert state["errors"]["bad-response"] >= 3
    assert bad.counters.requests == requests  # quarantined: no more work

    with sd.Embedder(nodes[:1], model=MODEL, batch_size=16) as emb:
        with pytest.raises(sd.NoNodeAvailableError, match="quarantined for 300 s") as info:
            emb.embed(TEXTS[:40])
    assert why in str(info.value)


def test_vectors_37_times_too_long_are_refused(sims):
    # llama-server --pooling none sends per-token vectors; its /v1/models says n_embd.
    long = Faults(long_vectors_every=1)
    bad, good = sims("llamacpp", faults=long), sims("llamacpp")
    nodes = [sd.Node(bad.url, api="openai"), sd.Node(good.url, api="openai")]
    why = "returned a vector of dimension 28416 to a probe, but its model has n_embd 768"
    with sd.Embedder(nodes, model=MODEL, batch_size=16) as emb:
        with pytest.warns(sd.FleetWarning, match=why):
            vectors = emb.embed(TEXTS)
        state = stats(emb)[bad.url]
    assert np.array_equal(vectors, EXPECTED)  # the bad node listed first did not win
    assert state["state"] == "excluded" and why in state["reason"]
    assert bad.counters.texts == 1  # the probe only

    with sd.Embedder(nodes[:1], model=MODEL) as emb, warnings.catch_warnings():
        warnings.simplefilter("ignore", sd.FleetWarning)
        with pytest.raises(sd.NoNodeAvailableError, match=why):
            emb.embed(TEXTS[:3])

    # Ollama's /api/show says 768: such answers are over the size 768-dimensional vectors
    # take, or else of the wrong dimension; the node is quarantined, its rows go on.
    ollama_bad, ollama_good = sims("gpu", faults=long), sims("gpu")
    with sd.Embedder([ollama_bad.url, ollama_good.url], model=MODEL, batch_size=16) as emb:
        embed_exactly_until(emb, lambda: stats(emb)[ollama_bad.url]["state"] == "quarantined",
                            20, "the node's quarantine")
        assert re.search(r"sent more than [\d,]+ bytes in one answer",
                         stats(emb)[ollama_bad.url]["reason"])
    with sd.Embedder([ollama_bad.url], model=MODEL, max_response_bytes=64 * MIB) as emb, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", sd.FleetWarning)
        with pytest.raises(sd.NoNodeAvailableError, match="returned vectors of dimension 28416, "
                                                          "the fleet uses 768: node excluded"):
            emb.embed(TEXTS[:3])


def test_parquet_metadata_says_the_measured_normalization(sims, tmp_path):
    import pandas as pd
    from distributed import Client, LocalCluster

    scaled = sims("llamacpp", faults=Faults(unnormalized_every=1))  # every answer x10
    pd.DataFrame({"text": TEXTS[:50]}).to_parquet(tmp_path / "in.parquet")
    emb = sd.Embedder([sd.Node(scaled.url, api="openai")], model=MODEL)
    assert emb.check_fleet().normalized is False
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        emb.embed_parquet(str(tmp_path / "in.parquet"), str(tmp_path / "out"), client=client)
    back = pq.read_table(tmp_path / "out")
    meta = orjson.loads(back.schema.metadata[b"sollol_dask"])
    assert meta["normalized"] is False and meta["dimension"] == 768
    vectors = np.stack(back.column("embedding").to_numpy(zero_copy_only=False))
    assert np.array_equal(vectors, EXPECTED[:50] * np.float32(10.0))
    emb.close()


# -- case 7: a proxy's HTML page while a node restarts ----------------------------------

def test_html_page_on_reprobe_then_json_again_restores_the_node(sims, hostile, caplog):
    upstream, good = sims("gpu"), sims("gpu")
    proxy = hostile(upstream)
    caplog.set_level(logging.ERROR)
    with sd.Embedder([proxy.url, good.url], model=MODEL, batch_size=16) as emb:
        assert np.array_equal(emb.embed(TEXTS), EXPECTED)
        proxy.misbehave(always, HTML_PAGE)  # restarting: 200 and an HTML page for everything
        embed_exactly_until(emb, lambda: stats(emb)[proxy.url]["state"] != "up", 20,
                            "the proxy's node to be ejected")
        # Re-probes keep failing (each one a plain failed probe, not a lost task)...
        wait_until(lambda: proxy.misbehaved[("GET", "/api/version")] >= 2, 20,
                   "two re-probes answered with HTML")
        state = stats(emb)[proxy.url]
        assert state["state"] in ("ejected", "probing")
        assert "malformed" in state["reason"] or "probing" == state["state"]
        proxy.behave()  # ...until the node answers JSON again
        wait_until(lambda: stats(emb)[proxy.url]["state"] == "up", 20, "the node's return")
        before = upstream.counters.texts
        embed_exactly_until(emb, lambda: upstream.counters.texts > before, 20,
                            "work on the restored node")
    gc.collect()
    assert "Task exception was never retrieved" not in caplog.text
    assert not [r for r in caplog.records if r.name.startswith("sollol_dask")]


def test_a_bug_in_a_probe_is_a_failed_probe_logged_once(sims, monkeypatch, caplog):
    from sollol_dask.backends import OllamaBackend

    node, good = sims("gpu"), sims("gpu")
    caplog.set_level(logging.DEBUG, logger="sollol_dask")
    calls = []

    async def broken(self, fetch, opts, name):
        calls.append(name)
        raise RuntimeError("a bug, not the node's fault")

    with sd.Embedder([node.url, good.url], model=MODEL, batch_size=16) as emb:
        assert np.array_equal(emb.embed(TEXTS), EXPECTED)
        monkeypatch.setattr(OllamaBackend, "_describe", broken)
        emb.router.balancer.eject(node.url, "made to be re-probed")
        wait_until(lambda: len(calls) >= 2, 20, "two re-probes")  # the node is not stuck
        monkeypatch.undo()
        wait_until(lambda: stats(emb)[node.url]["state"] == "up", 20, "the node's return")
    bugs = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(bugs) == 1 and bugs[0].exc_info and "a bug, not the node's fault" in bugs[0].message
    assert "Task exception was never retrieved" not in caplog.text


# -- case 8: a node that never finishes an answer -------------------------------------

def test_dripping_node_costs_bounded_time(sims, hostile):
    dripping = hostile()
    dripping.misbehave(embedding_texts, dripping.drip(0.2))
    with sd.Embedder([dripping.url], model=MODEL) as emb:  # default timeouts
        started = time.monotonic()
        with pytest.raises(sd.NoNodeAvailableError,
                           match=r"quarantined .* sent only \d+ bytes of an answer's body"):
            emb.embed(TEXTS[:3])
        alone = time.monotonic() - started
    assert alone < 30  # 3 answers given up after 5 s each; was 734 s

    good = sims("gpu")
    with sd.Embedder([dripping.url, good.url], model=MODEL) as emb:
        started = time.monotonic()
        vectors = emb.embed(TEXTS[:3])
        beside = time.monotonic() - started
    assert np.array_equal(vectors, EXPECTED[:3])
    assert beside < 10  # one 5 s try on the dripping node, then the good one (was 120 s)


# -- case 9: bodies without end -------------------------------------------------------

def test_500_mib_embedding_body_is_cut_at_the_limit(sims, hostile):
    huge = hostile()
    huge.misbehave(embedding_texts, huge.stream(500 * MIB))
    good = sims("gpu")
    with PeakRSS() as memory:
        with sd.Embedder([huge.url, good.url], model=MODEL, batch_size=16) as emb:
            embed_exactly_until(emb, lambda: stats(emb)[huge.url]["state"] == "quarantined",
                                20, "the node's quarantine")
        with sd.Embedder([huge.url], model=MODEL, batch_size=16) as emb:
            with pytest.raises(sd.NoNodeAvailableError,
                               match=r"sent more than 1,638,400 bytes in one answer"):
                emb.embed(TEXTS[:16])  # limit: 16 texts x 768 x 48 bytes + 1 MiB
    answers = huge.misbehaved[("POST", "/api/embed")]
    assert 6 <= answers <= 8  # 3 strikes in each run (and one already sent, maybe)
    assert huge.sent["/api/embed"] < answers * 8 * MIB  # read stopped; was 500 MiB each
    assert memory.growth < 100 * MIB  # was +1,000 MiB


def test_huge_model_list_is_cut_at_the_probe_limit(sims, hostile):
    huge = hostile()
    huge.misbehave(lambda request, _: request.path == "/api/tags",
                   huge.stream(36 * MIB, prefix=b'{"models": ['))
    with PeakRSS() as memory, sd.Embedder([huge.url], model=MODEL) as emb:
        with pytest.raises(sd.NoNodeAvailableError, match="sent more than 4 MiB in one answer"):
            emb.check_fleet()
    assert huge.sent["/api/tags"] < 16 * MIB  # was 36 MB
    assert memory.growth < 100 * MIB  # was +520 MiB


def test_long_model_list_is_named_in_a_few_words(hostile):
    names = [f"model-{i:05d}:latest" for i in range(30_000)]
    tags = orjson.dumps({"models": [{"name": n, "model": n, "digest": "d"} for n in names]})
    node = hostile()
    node.misbehave(lambda request, _: request.path == "/api/tags", answer(200, tags))
    with sd.Embedder([node.url], model=MODEL) as emb:
        with pytest.warns(sd.FleetWarning) as caught, pytest.raises(sd.ModelNotFoundError):
            emb.check_fleet()
        reason = stats(emb)[node.url]["reason"]
    message = str(caught[0].message)
    assert ("it has: model-00000:latest, model-00001:latest, model-00002:latest, "
            "model-00003:latest, model-00004:latest and 29995 more") in message
    assert len(message) < 600 and len(reason) < 600  # was 13.5 MB with Ollama's names


# -- case 10: error text without end --------------------------------------------------

def test_4_mib_error_text_is_clipped_everywhere(sims, hostile, caplog):
    big = "E" * (4 * MIB)
    caplog.set_level(logging.DEBUG, logger="sollol_dask")
    refusing = hostile()
    refusing.misbehave(embedding_texts, answer(401, orjson.dumps({"error": big})))
    good = sims("gpu")
    with sd.Embedder([refusing.url, good.url], model=MODEL, batch_size=16) as emb:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert np.array_equal(emb.embed(TEXTS), EXPECTED)
        snapshot = emb.node_stats()
    row = {s["node"]: s for s in snapshot}[refusing.url]
    assert row["state"] == "excluded" and "answered HTTP 401: EEEE" in row["reason"]
    assert len(row["reason"]) < 600 and "EEEE... (cut)" in row["reason"]
    # What a worker sends the scheduler each second, and what the dashboard keeps:
    assert len(msgpack.dumps(snapshot)) < 10_000
    view = FleetView()
    view.update("w", "c", [dict(s, state="up") for s in snapshot])
    view.update("w", "c", snapshot)
    assert max(len(e["text"]) for e in view.data()["events"]) < 600
    assert caught and all(len(str(w.message)) < 1000 for w in caught)

    refusing.behave()
    refusing.misbehave(embedding_texts, answer(500, big, "text/plain"))
    with sd.Embedder([refusing.url], model=MODEL, max_attempts=2, eject_after=5) as emb:
        with pytest.raises(sd.NodeError, match="failed on 2 attempts") as info:
            emb.embed(TEXTS[:3])
    assert len(str(info.value)) < 1500 and "answered HTTP 500: EEEE" in str(info.value)
    assert caplog.records and all(len(r.getMessage()) < 2000 for r in caplog.records)


# -- case 11: wrong counts forever, 429 with Retry-After, redirects ----------------------

def test_wrong_count_node_is_quarantined_not_readmitted_forever(sims):
    bad, good = sims("gpu", faults=Faults(missing_vector_every=1)), sims("gpu")
    with sd.Embedder([bad.url, good.url], model=MODEL, batch_size=16) as emb:
        started = time.monotonic()
        # Work for 6 s: before, the node was re-admitted every 1-2 s, 3 bad answers each.
        embed_exactly_until(emb, lambda: time.monotonic() - started > 6, 30, "6 s of work")
        state = stats(emb)[bad.url]
    assert state["state"] == "quarantined"
    assert "returned 15 vectors for 16 texts" in state["reason"]
    # The warm-up, then 3 bad answers (and at most 1 more already in flight): no re-admission.
    assert bad.counters.requests <= 1 + 3 + 1


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured(sims, status):
    busy = sims("gpu", faults=Faults(burst_status=status, burst_after=1, burst_count=1,
                                     retry_after=1.5))
    with sd.Embedder([sd.Node(busy.url, max_inflight=1)], model=MODEL, batch_size=16) as emb:
        vectors = emb.embed(TEXTS[:64])
        state = stats(emb)[busy.url]
    assert np.array_equal(vectors, EXPECTED[:64])
    arrivals = busy.counters.arrivals  # warm-up, the refused batch, then the rest
    assert len(arrivals) == 2 + 64 // 16
    assert arrivals[2] - arrivals[1] >= 1.5  # nothing sent before Retry-After ran out
    assert state["state"] == "up" and state["errors"] == {"busy": 1}


def test_redirect_is_not_followed_and_names_the_url_to_configure(sims, hostile):
    upstream = sims("gpu")
    target = hostile(upstream)  # where the redirect points: must never be contacted
    moving = hostile(upstream)

    async def redirect(request: web.Request, _: bytes) -> web.Response:
        return web.Response(status=307, headers={"Location": target.url + request.path})

    moving.misbehave(always, redirect)
    node = sd.Node(moving.url, headers={"Authorization": "Bearer not-for-others"})
    hint = (f"redirects to {target.url}/api/version (HTTP 307): configure the node as "
            f"{target.url} instead")
    with sd.Embedder([node], model=MODEL) as emb, warnings.catch_warnings():
        warnings.simplefilter("ignore", sd.FleetWarning)
        with pytest.raises(sd.NoNodeAvailableError, match="excluded") as info:
            emb.embed(["x"])
    assert hint in str(info.value)

    moving.behave()
    moving.misbehave(embedding_texts, redirect)  # only the embedding route moved
    good = sims("gpu")
    with sd.Embedder([node, good.url], model=MODEL, batch_size=16) as emb:
        with pytest.warns(sd.FleetWarning, match=f"redirects to {target.url}/api/embed "
                                                 f"\\(HTTP 307\\): configure the node as {target.url}"):
            assert np.array_equal(emb.embed(TEXTS), EXPECTED)
    assert sum(target.hits.values()) == 0
