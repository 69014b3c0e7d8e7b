"""The simulated node speaks Ollama's protocol: routes, bodies, errors, counters."""

from __future__ import annotations

import base64
import time

import httpx
import numpy as np
import pytest

from sollol_dask.testing import PROFILES, SimProcess, count_tokens, sim_digest, sim_vector, sim_vectors

from .conftest import MODEL


@pytest.fixture
def node(sims):
    return sims("gpu", context_length=100)


def get(node, path):
    return httpx.get(node.url + path, timeout=5)


def post(node, path, body):
    return httpx.post(node.url + path, json=body, timeout=5)


def test_vectors_are_a_pure_normalized_function():
    v = sim_vector(MODEL, "hello", 768)
    assert v.dtype == np.float32 and v.shape == (768,)
    assert abs(float(np.linalg.norm(v)) - 1.0) < 1e-6
    assert np.array_equal(v, sim_vector(MODEL, "hello", 768))
    assert not np.array_equal(v, sim_vector("other-model", "hello", 768))
    assert not np.array_equal(v, sim_vector(MODEL, "hello!", 768))


def test_discovery_routes(node):
    assert get(node, "/").text == "Ollama is running"
    assert httpx.head(node.url + "/").status_code == 200
    assert get(node, "/api/version").json()["version"]
    (tag,) = get(node, "/api/tags").json()["models"]
    assert tag["name"] == f"{MODEL}:latest" and tag["digest"] == sim_digest(MODEL)
    assert {"size", "details"} <= set(tag)
    assert get(node, "/api/ps").json()["models"] == []  # cold: nothing loaded yet
    info = post(node, "/api/show", {"model": MODEL}).json()["model_info"]
    assert info["nomic-bert.embedding_length"] == 768 and info["nomic-bert.context_length"] == 100
    post(node, "/api/embed", {"model": MODEL, "input": []})  # loads the model
    (loaded,) = get(node, "/api/ps").json()["models"]
    assert {"size", "size_vram", "expires_at"} <= set(loaded)


def test_embed_routes_return_the_documented_vectors(node):
    texts = ["alpha", "beta gamma"]
    body = post(node, "/api/embed", {"model": MODEL, "input": texts}).json()
    assert np.array_equal(np.array(body["embeddings"], np.float32), sim_vectors(MODEL, texts, 768))
    assert body["model"] == MODEL and body["total_duration"] > 0
    one = post(node, "/api/embed", {"model": MODEL, "input": "alpha"}).json()["embeddings"]
    assert np.array_equal(np.array(one, np.float32)[0], sim_vector(MODEL, "alpha", 768))
    legacy = np.array(post(node, "/api/embeddings", {"model": MODEL, "prompt": "alpha"})
                      .json()["embedding"], np.float32)
    assert np.allclose(legacy / 10.0, sim_vector(MODEL, "alpha", 768))  # not normalized
    b64 = post(node, "/v1/embeddings", {"model": MODEL, "input": texts,
                                         "encoding_format": "base64"}).json()
    decoded = [np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in b64["data"]]
    assert np.array_equal(np.stack(decoded), sim_vectors(MODEL, texts, 768))
    assert [d["index"] for d in b64["data"]] == [0, 1]
    assert node.counters.requests == 4 and node.counters.texts == 6


def test_errors_match_ollama(node):
    r = post(node, "/api/embed", {"model": "nope", "input": ["x"]})
    assert r.status_code == 404 and r.json() == {"error": 'model "nope" not found, try pulling it first'}
    r = post(node, "/api/embed", {"model": MODEL, "input": [1, 2]})
    assert r.status_code == 400 and r.json() == {"error": "invalid input type"}
    r = post(node, "/api/embed", {"model": MODEL, "input": ["x" * 1000], "truncate": False})
    assert r.status_code == 400 and "context length" in r.json()["error"]
    r = post(node, "/v1/embeddings", {"model": MODEL, "input": []})
    assert r.status_code == 400 and r.json()["error"]["message"]
    r = post(node, "/api/show", {"model": "nope"})
    assert r.status_code == 404


def test_truncation_embeds_the_first_context_tokens(node):
    long = "y" * 1000
    got = post(node, "/api/embed", {"model": MODEL, "input": [long]}).json()["embeddings"][0]
    assert np.array_equal(np.array(got, np.float32), sim_vector(MODEL, long[:400], 768))


def test_fault_injection(sims):
    from sollol_dask.testing import Faults

    node = sims("gpu", faults=Faults(eof_every=2, burst_status=503, burst_after=2, burst_count=1))
    statuses = [post(node, "/api/embed", {"model": MODEL, "input": ["x"]}).status_code
                for _ in range(4)]
    assert statuses == [200, 400, 503, 400]
    node.faults.eof_every = 0
    node.faults.die_after = node.counters.requests + 1
    assert post(node, "/api/embed", {"model": MODEL, "input": ["x"]}).status_code == 200
    with pytest.raises(httpx.TransportError):
        post(node, "/api/embed", {"model": MODEL, "input": ["x"]})
    with pytest.raises(httpx.ConnectError):
        get(node, "/")


def test_time_model_and_profiles():
    gpu, cpu = PROFILES["gpu"], PROFILES["cpu"]
    text = "w" * 256  # 64 tokens
    assert count_tokens(text) == 64 and count_tokens("") == 1
    assert 100 < 1 / gpu.service_seconds([text] * 1000) * 1000 < 130
    assert 13 < 1 / cpu.service_seconds([text] * 1000) * 1000 < 17
    assert PROFILES["llamacpp"].slots == 8
    assert PROFILES["instant"].service_seconds([text] * 100) == 0
    assert gpu.capacity([text] * 640, 64) == pytest.approx(640 / (10 * gpu.service_seconds([text] * 64)))


def test_sim_counts_its_busy_slot_time(sims):
    node = sims("cpu")
    text = "w" * 256
    before = time.time()
    r = httpx.post(node.url + "/api/embed", json={"model": MODEL, "input": [text] * 3}, timeout=10)
    assert r.status_code == 200
    counters = httpx.get(node.url + "/sim/counters").json()
    expected = PROFILES["cpu"].service_seconds([text] * 3)
    assert counters["busy_seconds"] == pytest.approx(expected)
    assert counters["texts"] == 3 and counters["requests"] == 1
    assert before <= counters["first_busy"] < counters["last_busy"] <= time.time()
    assert counters["last_busy"] - counters["first_busy"] == pytest.approx(expected, abs=0.01)


def test_sim_command_serves_until_terminated():
    with SimProcess("instant", "--dimension", "16") as proc:
        r = httpx.post(proc.url + "/api/embed", json={"model": MODEL, "input": ["a"]})
        assert np.array_equal(np.array(r.json()["embeddings"][0], np.float32),
                              sim_vector(MODEL, "a", 16))
    assert proc.proc.returncode is not None
