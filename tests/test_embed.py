"""Embedder.embed() against real simulated nodes on 127.0.0.1: every row checked."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import sollol_dask as sd
from sollol_dask.testing import Faults, SimProcess, sim_vectors

from .conftest import MODEL

TEXTS = [f"passage {i}: " + "lorem ipsum " * (i % 13) for i in range(300)]
EXPECTED = sim_vectors(MODEL, TEXTS, 768)


def embedder(nodes, **kw) -> sd.Embedder:
    kw.setdefault("batch_size", 16)
    return sd.Embedder([n if isinstance(n, (str, sd.Node)) else n.url for n in nodes],
                       model=MODEL, **kw)


def test_every_row_exact_in_order_across_nodes_of_different_speed(sims):
    nodes = [sims("gpu"), sims("cpu"), sims("llamacpp")]
    with embedder(nodes) as emb:
        vectors = emb.embed(TEXTS)
        stats = {s["node"]: s for s in emb.node_stats()}
    assert vectors.dtype == np.float32 and vectors.shape == (300, 768)
    assert np.array_equal(vectors, EXPECTED)
    # Each row once, plus the losing copies of hedged batches (they run to their end, so
    # a node never has more than its cap in flight): at most a batch (16) each.
    copies = sum(s["overtaken"] for s in stats.values())
    assert 300 <= sum(n.counters.texts for n in nodes) <= 300 + 16 * copies
    # Work-conserving: the gpu node (~8x the cpu node) does more than the cpu node.
    assert nodes[0].counters.texts > nodes[1].counters.texts
    for node in nodes[:2]:  # Ollama cap: 2 in flight, as the sims observed it
        assert node.counters.max_inflight <= 2
        assert stats[node.url]["max_inflight_seen"] <= 2



def test_a_server_batch_limit_costs_a_few_refusals_then_batches_fit(sims):
    # TEI answers 422 above 32 inputs, saying so; the first batches are 16 (node not yet
    # measured), the speed-sized ones after are larger: refused while the limit is unknown
    # (one per lane in flight at most), then sent at the limit.
    node = sims("instant", faults=Faults(max_inputs=32))
    with embedder([sd.Node(node.url, api="openai")], batch_size=512) as emb:
        vectors = emb.embed(TEXTS * 4)
    assert np.array_equal(vectors[:300], EXPECTED) and np.array_equal(vectors[900:], EXPECTED)
    assert node.counters.texts == 300 + 1  # identical texts embedded once; +1: the probe
    assert 1 <= node.counters.errors <= 4  # the node's cap: 4 lanes in flight

def test_in_flight_cap_holds_from_many_threads(sims):
    node = sims("gpu")
    with embedder([node]) as emb:
        results = {}

        def work(k):
            results[k] = emb.embed(TEXTS[k * 50:(k + 1) * 50])

        threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
        [t.start() for t in threads]
        [t.join() for t in threads]
    assert node.counters.max_inflight == 2
    assert np.array_equal(np.concatenate([results[k] for k in range(6)]), EXPECTED)


def test_identical_texts_are_embedded_once(sims):
    node = sims("gpu")
    texts = ["same"] * 50 + ["other"] * 50
    with embedder([node]) as emb:
        vectors = emb.embed(texts)
    assert node.counters.texts == 2
    assert np.array_equal(vectors, sim_vectors(MODEL, texts, 768))


def test_node_dying_mid_run_loses_no_row(sims):
    dying, healthy = sims("gpu", faults=Faults(die_after=4)), sims("gpu")
    with embedder([dying, healthy]) as emb:
        vectors = emb.embed(TEXTS)
        state = {s["node"]: s["state"] for s in emb.node_stats()}
    assert np.array_equal(vectors, EXPECTED)
    assert state[dying.url] in ("ejected", "probing")
    assert healthy.counters.texts + dying.counters.texts >= 300


def test_node_process_killed_mid_run_loses_no_row():
    with SimProcess("gpu", "--load-seconds", "0") as a, SimProcess("gpu", "--load-seconds", "0") as b:
        with embedder([a.url, b.url], batch_size=4) as emb:
            emb.check_fleet()
            killer = threading.Timer(0.3, a.kill)
            killer.start()
            vectors = emb.embed(TEXTS)
            killer.join()
            state = {s["node"]: s for s in emb.node_stats()}
    assert np.array_equal(vectors, EXPECTED)
    assert state[a.url]["state"] in ("ejected", "probing")
    assert state[b.url]["texts"] > 0


def test_transient_400s_and_503s_are_retried_elsewhere(sims):
    flaky = sims("gpu", faults=Faults(eof_every=3, nan_every=5))
    # The burst starts after the warm-up request, so it hits batches.
    busy = sims("gpu", faults=Faults(burst_status=503, burst_after=1, burst_count=3))
    resetting = sims("gpu", faults=Faults(reset_every=4, malformed_every=7, truncated_every=9))
    with embedder([flaky, busy, resetting], eject_after=100, max_attempts=10) as emb:
        vectors = emb.embed(TEXTS)
        errors = {s["node"]: sum(s["errors"].values()) for s in emb.node_stats()}
    assert np.array_equal(vectors, EXPECTED)
    assert errors[flaky.url] > 0 and errors[resetting.url] > 0 and errors[busy.url] == 3
    assert busy.counters.texts > 0  # and it served after the burst


def test_hung_node_costs_bounded_time(sims):
    hung, healthy = sims("gpu", faults=Faults(hang_after=3)), sims("gpu")
    with embedder([hung, healthy], first_timeout=1.0, min_timeout=1.0) as emb:
        started = time.monotonic()
        vectors = emb.embed(TEXTS)
        elapsed = time.monotonic() - started
        state = {s["node"]: s["state"] for s in emb.node_stats()}
    assert np.array_equal(vectors, EXPECTED)
    assert state[hung.url] != "up"
    # Two batches hang for at most a 1 s timeout each, then move to the healthy node.
    assert elapsed < 10


def test_unknown_model_raises_with_the_fix(sims):
    node = sims("gpu")
    with sd.Embedder([node.url], model="no-such-model") as emb:
        with pytest.raises(sd.ModelNotFoundError, match="ollama pull no-such-model"):
            emb.embed(["x"])
    assert node.counters.requests == 0


def test_node_with_other_dimension_or_digest_is_excluded_with_a_warning(sims):
    good, good2 = sims("gpu"), sims("gpu")
    other_dim, other_digest = sims("gpu", dimension=384), sims("gpu", digest_variant="q4")
    with embedder([good, other_dim, good2, other_digest]) as emb:
        with pytest.warns(sd.FleetWarning) as caught:
            vectors = emb.embed(TEXTS)
        state = {s["node"]: s for s in emb.node_stats()}
    assert np.array_equal(vectors, EXPECTED)
    messages = " ".join(str(w.message) for w in caught)
    assert f"{other_dim.url} excluded" in messages and "dimension 384" in messages
    assert f"{other_digest.url} excluded" in messages and "digest" in messages
    assert other_dim.counters.requests == 0 and other_digest.counters.requests == 0
    assert state[other_dim.url]["state"] == "excluded"


def test_empty_list_and_non_string_item(sims):
    node = sims("gpu")
    with embedder([node]) as emb:
        assert emb.embed([]).shape == (0, 768)
        with pytest.raises(sd.InputError, match="row 2 is int, not str") as info:
            emb.embed(["a", "b", 7])
        assert info.value.row == 2
        assert node.counters.texts == 0
        # One string is one text (as sentence-transformers' encode(str)), not its characters.
        assert np.array_equal(emb.embed("just one string"),
                              sim_vectors(MODEL, ["just one string"], 768)[0])
    assert node.counters.texts == 1


def test_text_over_context_with_truncate_false_names_its_row(sims):
    node = sims("gpu", context_length=50)
    texts = ["short"] * 10 + ["x" * 1000] + ["short too"] * 5
    with embedder([node], truncate=False) as emb:
        with pytest.raises(sd.InputError, match="row 10 is longer than the model's context") as info:
            emb.embed(texts)
    assert info.value.row == 10
    with embedder([node]) as emb:  # default: the server truncates
        vectors = emb.embed(texts)
    assert np.array_equal(vectors[10], sim_vectors(MODEL, ["x" * 200], 768)[0])


def test_localhost_and_127_are_one_node(sims):
    node = sims("gpu")
    port = node.port
    with sd.Embedder([f"http://localhost:{port}", f"http://127.0.0.1:{port}"], model=MODEL) as emb:
        assert len(emb.nodes) == 1
        emb.embed(TEXTS[:20])
        assert len(emb.node_stats()) == 1


def test_all_nodes_down_is_a_clear_error(sims):
    node = sims("gpu")
    node.stop()
    with sd.Embedder([node.url, "http://127.0.0.1:9"], model=MODEL, probe_timeout=2) as emb:
        with pytest.raises(sd.NoNodeAvailableError, match="no node can embed") as info:
            emb.embed(["x"])
    assert set(info.value.reasons) == {node.url, "http://127.0.0.1:9"}


def test_ejected_node_is_reprobed_and_restored(sims):
    a, b = sims("gpu"), sims("cpu")
    with embedder([a, b]) as emb:
        emb.embed(TEXTS[:40])
        a.kill()
        emb.embed(TEXTS[40:120])
        assert {s["node"]: s["state"] for s in emb.node_stats()}[a.url] != "up"
        a.revive()
        before = a.counters.texts
        # The probe runs 1 s after ejection; embed until a has taken work again.
        deadline = time.monotonic() + 20
        while a.counters.texts == before and time.monotonic() < deadline:
            emb.embed(TEXTS[120:300])
        assert a.counters.texts > before
        assert {s["node"]: s["state"] for s in emb.node_stats()}[a.url] == "up"


def test_openai_backend_float_and_base64(sims):
    node = sims("llamacpp")
    for encoding in ("base64", "float"):
        with sd.Embedder([sd.Node(node.url + "/v1", api="openai")], model=MODEL,
                         encoding=encoding) as emb:
            assert np.array_equal(emb.embed(TEXTS[:50]), EXPECTED[:50])


def test_header_secrets_never_in_errors(sims):
    node = sims("gpu")
    node.stop()
    secret = "Bearer top-secret-123"
    with sd.Embedder([sd.Node(node.url, headers={"Authorization": secret})], model=MODEL,
                     probe_timeout=1) as emb:
        with pytest.raises(sd.SollolError) as info:
            emb.embed(["x"])
        assert "top-secret" not in str(info.value) and "top-secret" not in repr(emb)



def test_cold_node_is_warmed_before_it_gets_batches(sims):
    warm, cold = sims("gpu"), sims("gpu", load_seconds=3.0)
    with embedder([warm, cold]) as emb:
        emb.check_fleet()
        state = {s["node"]: s["state"] for s in emb.node_stats()}
        assert state[cold.url] == "warming"
        vectors = emb.embed(TEXTS)  # ~1.5 s of work for the warm node alone
    assert np.array_equal(vectors, EXPECTED)
    # The cold node got only the warm-up (an empty input); no batch waited for its load.
    assert (cold.counters.requests, cold.counters.texts) == (1, 0)
    assert warm.counters.texts == 300


def test_tail_is_hedged_onto_a_faster_idle_node(sims):
    fast, slow = sims("gpu"), sims("cpu", faults=Faults(slowdown=20.0))
    with embedder([fast, slow], batch_size=16) as emb:
        emb.embed(TEXTS[:64])  # measure both nodes
        fast_before = fast.counters.texts
        started = time.monotonic()
        vectors = emb.embed(TEXTS[64:])
        elapsed = time.monotonic() - started
    assert np.array_equal(vectors, EXPECTED[64:])
    # Measured at ~0.9 s per text, the slow node gets batches of 8 (~7 s each). Copies
    # of them went to the fast node, which answered first: it embedded every text, and
    # the run did not wait for a slow batch.
    assert fast.counters.texts - fast_before >= 236
    assert elapsed < 6


def test_a_copy_that_lost_keeps_its_slot_until_its_server_is_done(sims):
    # The slow node finishes what it computes even when the client hangs up (Ollama's
    # one slot): a lost copy's slot given back at once would let the next call's batch
    # in beside it, over the node's cap of 1.
    fast = sims("gpu")
    slow = sims("gpu", faults=Faults(finish_after_hangup=True))
    nodes = [fast.url, sd.Node(slow.url, max_inflight=1)]
    with embedder(nodes, batch_size=16) as emb:
        emb.embed(TEXTS[:64])  # measure both nodes at the same speed
        slow.faults.slowdown = 40.0  # now its batches run 40x longer than expected
        first = emb.embed(TEXTS[64:200])
        second = emb.embed(TEXTS[200:])
        stats = {s["node"]: s for s in emb.node_stats()}
    assert np.array_equal(first, EXPECTED[64:200]) and np.array_equal(second, EXPECTED[200:])
    assert stats[slow.url]["overtaken"] >= 1  # its batch was copied, and the copy won
    assert slow.counters.max_inflight == 1


@pytest.mark.parametrize("path", ["/api/embed", "/api/embeddings", "/v1/embeddings"])
def test_a_node_url_copied_with_an_endpoint_path_embeds(sims, path):
    node = sims("gpu")
    with sd.Embedder([node.url + path], model=MODEL) as emb:
        vectors = emb.embed(TEXTS[:20])
        assert [s["node"] for s in emb.node_stats()] == [node.url]
    assert np.array_equal(vectors, EXPECTED[:20])


def test_an_openai_node_at_ollama_missing_the_model_is_told_to_pull_it(sims):
    node = sims("gpu")
    with sd.Embedder([sd.Node(node.url, api="openai")], model="no-such-model") as emb, \
            pytest.warns(sd.FleetWarning):
        with pytest.raises(sd.ModelNotFoundError) as info:
            emb.embed(["x"])
    assert str(info.value) == (
        f"model 'no-such-model' is on none of the nodes: model 'no-such-model' not found on "
        f"{node.url}: run `ollama pull no-such-model` there (it has: nomic-embed-text)")
    assert node.counters.requests == 0
