"""Wire formats and error classification, on bodies as the servers send them."""

import base64

import numpy as np
import orjson
import pytest

from sollol_dask import BadResponseError, ModelNotFoundError
from sollol_dask.backends import BACKENDS, EmbedOptions, Failure

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
