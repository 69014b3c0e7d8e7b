"""Wire formats and error classification, on bodies as the servers send them."""

import asyncio
import base64

import numpy as np
import orjson
import pytest

from sollol_dask import BadResponseError, ModelNotFoundError
from sollol_dask import Failure
from sollol_dask.backends import BACKENDS, EmbedOptions

OLLAMA, OPENAI = BACKENDS["ollama"], BACKENDS["openai"]


def classify(status, body, backend=OLLAMA):
    return backend.classify(status, orjson.dumps(body), "http://n:1", "nomic-embed-text")


@pytest.mark.parametrize("status,message,kind", [
    (400, 'do embedding request: Post "http://127.0.0.1:1/embedding": EOF', Failure.TRANSIENT),
    (400, "embedding contains NaN or Inf values", Failure.TRANSIENT),
    (500, "json: unsupported value: NaN", Failure.TRANSIENT),
    (503, "server busy, please try again.  maximum pending requests exceeded", Failure.TRANSIENT),
    (500, "llama runner process has terminated", Failure.TRANSIENT),
    (429, "too many requests", Failure.TRANSIENT),
    (400, "the input length exceeds the context length", Failure.TOO_LONG),
    (500, "input is too large to process. increase the physical batch size", Failure.TOO_LONG),
    (413, "payload too large", Failure.TOO_BIG),
    (422, "batch size 64 > maximum allowed batch size 32", Failure.TOO_BIG),
    (401, "unauthorized", Failure.NODE_FATAL),
    (400, "invalid input type", Failure.CALLER),
])
def test_errors_are_classified_by_cause(status, message, kind):
    err = classify(status, {"error": message})
    assert err.failure is kind
    assert err.status == status and err.node == "http://n:1"
    assert message in str(err)


def test_model_not_found_says_how_to_fix():
    err = classify(404, {"error": 'model "nomic-embed-text" not found, try pulling it first'})
    assert isinstance(err, ModelNotFoundError) and err.failure is Failure.NODE_FATAL
    assert "ollama pull nomic-embed-text" in str(err)


def test_openai_error_shape_is_read():
    err = classify(400, {"error": {"message": "exceed_context_size_error", "type": "x"}}, OPENAI)
    assert "exceed_context_size_error" in str(err)


def test_ollama_parse_checks_count_dimension_and_finiteness():
    ok = OLLAMA.parse_embed(orjson.dumps({"embeddings": [[0.5, 0.5], [1.0, 0.0]]}), 2, "n")
    assert ok.dtype == np.float32 and ok.shape == (2, 2)
    with pytest.raises(BadResponseError, match="returned 1 vectors for 2 texts"):
        OLLAMA.parse_embed(orjson.dumps({"embeddings": [[0.5, 0.5]]}), 2, "n")
    with pytest.raises(BadResponseError, match="malformed"):
        OLLAMA.parse_embed(b'{"embeddings": [[0.1, oops', 1, "n")
    with pytest.raises(BadResponseError, match="malformed"):
        OLLAMA.parse_embed(orjson.dumps({"embeddings": [[0.5], [0.5, 0.1]]}), 2, "n")
    with pytest.raises(BadResponseError, match="non-finite vector \\(batch item 1\\)"):
        OLLAMA.parse_embed(b'{"embeddings": [[0.5], [1e39]]}', 2, "n")


def test_openai_parse_base64_and_float_in_index_order():
    a, b = np.array([0.25, -1.5], np.float32), np.array([3.0, 0.125], np.float32)
    b64 = {"data": [{"index": 1, "embedding": base64.b64encode(b.tobytes()).decode()},
                    {"index": 0, "embedding": base64.b64encode(a.tobytes()).decode()}]}
    assert np.array_equal(OPENAI.parse_embed(orjson.dumps(b64), 2, "n"), np.stack([a, b]))
    flt = {"data": [{"index": 0, "embedding": [0.25, -1.5]}, {"index": 1, "embedding": [3.0, 0.125]}]}
    assert np.array_equal(OPENAI.parse_embed(orjson.dumps(flt), 2, "n"), np.stack([a, b]))


def test_request_bodies_keep_options_identical():
    opts = EmbedOptions(model="m", truncate=False, keep_alive="10m", options={"num_ctx": 512})
    body = orjson.loads(OLLAMA.embed_body(["x", "y"], opts))
    assert body == {"model": "m", "input": ["x", "y"], "truncate": False, "keep_alive": "10m",
                    "options": {"num_ctx": 512}}
    body = orjson.loads(OPENAI.embed_body(["x"], EmbedOptions(model="m")))
    assert body == {"model": "m", "input": ["x"], "encoding_format": "base64"}


# -- hostile answers ----------------------------------------------------------------

def unit(n: int, dim: int = 4, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_every_row_is_checked_count_finite_zero_norm_dimension():
    good = unit(3)
    body = lambda m: orjson.dumps({"embeddings": m.tolist()})  # noqa: E731
    assert np.array_equal(OLLAMA.parse_embed(body(good), 3, "n", dimension=4, norm=1.0), good)
    zero = good.copy()
    zero[2] = 0
    with pytest.raises(BadResponseError, match=r"n returned an all-zero vector \(batch item 2\)") as info:
        OLLAMA.parse_embed(body(zero), 3, "n")
    assert info.value.failure is Failure.BAD_RESPONSE
    scaled = good.copy()
    scaled[1] *= 10
    with pytest.raises(BadResponseError, match=r"vector of norm 10 \(batch item 1\); the fleet's "
                                               r"vectors have norm 1 \(normalized\)"):
        OLLAMA.parse_embed(body(scaled), 3, "n", norm=1.0)
    # A fleet of unnormalized vectors (norm ~10 here) takes norms within 10x of its own.
    assert OLLAMA.parse_embed(body(good * 10), 3, "n", norm=12.0).shape == (3, 4)
    with pytest.raises(BadResponseError, match="norm 1 .*the fleet's vectors have norm about 120"):
        OLLAMA.parse_embed(body(good), 3, "n", norm=120.0)
    with pytest.raises(BadResponseError, match="dimension 4, the fleet uses 768") as info:
        OLLAMA.parse_embed(body(good), 3, "n", dimension=768)
    assert info.value.failure is Failure.NODE_FATAL  # never mixed: excluded


def test_openai_index_values_must_be_each_row_once():
    a, b, c = unit(3)
    item = lambda i, v: {"index": i, "embedding": v.tolist()}  # noqa: E731
    placed = OPENAI.parse_embed(orjson.dumps({"data": [item(2, c), item(0, a), item(1, b)]}), 3, "n")
    assert np.array_equal(placed, np.stack([a, b, c]))
    for indexes in ([0, 0, 0], [0, 1, 3], [0, 1, True], [0, 1, "2"], [0, 1, 1.0]):
        data = {"data": [item(i, v) for i, v in zip(indexes, (c, b, a))]}
        with pytest.raises(BadResponseError, match="index values .* for 3 texts .*each of 0..2 "
                                                   "once expected") as info:
            OPENAI.parse_embed(orjson.dumps(data), 3, "n")
        assert info.value.failure is Failure.BAD_RESPONSE


def test_server_error_text_is_clipped_whatever_its_shape():
    huge = "x" * (4 * 1024 * 1024)
    for body in ({"error": huge}, {"error": {"message": huge, "type": "t"}}, {"detail": [huge]}):
        err = classify(500, body)
        assert len(str(err)) < 500 and "xxxx... (" in str(err)
    err = OLLAMA.classify(400, huge.encode()[:65536], "http://n:1", "m")  # a cut plain body
    assert len(str(err)) < 500 and str(err).count("x") == 300


def test_a_redirect_is_configuration_and_names_the_url():
    err = OLLAMA.classify(301, b"", "http://n:1", "m", location="https://gpu.example/api/embed",
                          path="/api/embed")
    assert err.failure is Failure.NODE_FATAL and not err.retryable
    assert ("http://n:1 redirects to https://gpu.example/api/embed (HTTP 301): configure the node "
            "as https://gpu.example instead") in str(err)
    err = OLLAMA.classify(307, b"", "http://n:1", "m", location="/ollama/api/tags", path="/api/tags")
    assert "configure the node as http://n:1/ollama instead" in str(err)
    err = OLLAMA.classify(302, b"", "http://n:1", "m", location="https://u:pw@elsewhere/x", path="/")
    assert "pw" not in str(err) and "https://u:***@elsewhere/x" in str(err)


def test_retry_after_on_429_and_503_makes_a_pause_not_a_failure():
    err = OLLAMA.classify(429, b'{"error": "queue full"}', "http://n:1", "m", retry_after="3")
    assert (err.failure, err.retry_after) == (Failure.BUSY, 3.0)
    assert "asked to wait 3 s" in str(err)
    err = OLLAMA.classify(503, b"{}", "http://n:1", "m", retry_after="Wed, 21 Oct 2015 07:28:00 GMT")
    assert (err.failure, err.retry_after) == (Failure.BUSY, 0.0)  # a date in the past
    err = OLLAMA.classify(500, b"{}", "http://n:1", "m", retry_after="3")  # only 429 and 503
    assert err.failure is Failure.TRANSIENT and err.retry_after is None


def test_describe_maps_undecodable_answers_to_a_failed_probe():
    from sollol_dask.backends import Reply
    from sollol_dask import NodeError

    def fetching(answers: dict):
        async def fetch(method, path, payload):
            status, body = answers.get(path, (404, b'{"error": "not found"}'))
            return Reply(status, body, path)
        return fetch

    html = (200, b"<html><h1>502 Bad Gateway</h1></html>")
    for answers in ({"/api/version": html}, {"/api/version": (200, b"[]")},
                    {"/api/version": (200, b"{}"), "/api/tags": (200, b'{"models": [1, 2]}')}):
        with pytest.raises(BadResponseError, match="malformed answer to") as info:
            asyncio.run(OLLAMA.describe(fetching(answers), EmbedOptions(model="m"), "http://n:1"))
        assert info.value.failure is Failure.TRANSIENT  # a proxy's page: probed again later
    names = {"models": [{"name": f"other-{i}"} for i in range(100)]}
    answers = {"/api/version": (200, b"{}"), "/api/tags": (200, orjson.dumps(names))}
    with pytest.raises(ModelNotFoundError, match=r"it has: other-0, other-1, other-10, other-11, "
                                                 r"other-12 and 95 more\)$"):
        asyncio.run(OLLAMA.describe(fetching(answers), EmbedOptions(model="m"), "http://n:1"))
    answers["/api/tags"] = (404, b"404 page not found")
    with pytest.raises(NodeError, match="has no /api/tags .* use Node\\(url, api='openai'\\)"):
        asyncio.run(OLLAMA.describe(fetching(answers), EmbedOptions(model="m"), "http://n:1"))


def _fake_server(answers: dict):
    from sollol_dask.backends import Reply

    async def fetch(method, path, payload):
        if path not in answers:
            return Reply(404, b'{"error": "not found"}', path)
        return Reply(200, orjson.dumps(answers[path]), path)
    return fetch


def test_an_ollama_node_at_tei_or_vllm_is_told_to_use_the_openai_route():
    from sollol_dask import NodeError

    tei = {"/info": {"model_id": "BAAI/bge-small-en-v1.5", "version": "1.5.0",
                     "max_client_batch_size": 32}}
    vllm = {"/v1/models": {"object": "list", "data": [
        {"id": "intfloat/e5-small-v2", "object": "model", "owned_by": "vllm"}]}}
    for answers, kind in ((tei, "text-embeddings-inference, serving BAAI/bge-small-en-v1.5"),
                          (vllm, "vllm, serving intfloat/e5-small-v2")):
        with pytest.raises(NodeError) as info:
            asyncio.run(OLLAMA.describe(_fake_server(answers), EmbedOptions(model="m"),
                                        "http://n:1"))
        assert str(info.value) == (
            f"http://n:1 is an OpenAI-compatible server ({kind}), not an Ollama server: use "
            "Node('http://n:1', api='openai') (command line: --openai-node http://n:1)")


def test_an_openai_node_missing_a_model_is_not_told_to_ollama_pull():
    err = OPENAI.classify(404, b'{"error": {"message": "model not found"}}', "http://n:1", "m")
    assert isinstance(err, ModelNotFoundError) and "ollama pull" not in str(err)
    assert str(err) == (
        "model 'm' not found on http://n:1 (server said: model not found): an "
        "OpenAI-compatible server serves the models it was started with, listed at "
        "http://n:1/v1/models; pass one of them as model=, or remove the node")
    # vLLM lists its served name; another name is refused before any vector is labelled.
    vllm = {"/v1/models": {"object": "list", "data": [
        {"id": "intfloat/e5-small-v2", "object": "model", "owned_by": "vllm"}]}}
    with pytest.raises(ModelNotFoundError) as info:
        asyncio.run(OPENAI.describe(_fake_server(vllm), EmbedOptions(model="e5"), "http://n:1"))
    assert str(info.value).startswith(
        "http://n:1 serves intfloat/e5-small-v2 (its /v1/models), not 'e5': its vectors would "
        "be labelled with the wrong model. Pass model='intfloat/e5-small-v2'")
