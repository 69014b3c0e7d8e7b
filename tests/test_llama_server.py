"""The real llama.cpp server through the OpenAI backend, checked against reference vectors."""

from __future__ import annotations

import json

import numpy as np
import pytest

import sollol_dask as sd

from .llama import REFERENCE, LlamaServer

pytestmark = pytest.mark.llama


@pytest.fixture(scope="module")
def llama():
    server = LlamaServer()  # fails (never skips) if the server cannot start
    yield server
    server.stop()


def test_reference_vectors_from_real_llama_server(llama):
    reference = json.loads(REFERENCE.read_text())
    texts = [item["text"] for item in reference["items"]]
    expected = np.array([item["embedding"] for item in reference["items"]], np.float32)
    with sd.Embedder([sd.Node(llama.url + "/v1", api="openai")], model="all-MiniLM-L6-v2",
                     batch_size=8) as emb:
        ref = emb.check_fleet()
        vectors = emb.embed(texts)
        stats = emb.node_stats()
    assert ref.dimension == reference["dim"] == 384
    assert vectors.shape == (20, 384) and vectors.dtype == np.float32
    cosine = np.sum(vectors * expected, axis=1) / (
        np.linalg.norm(vectors, axis=1) * np.linalg.norm(expected, axis=1))
    assert cosine.min() >= 0.999, cosine.min()
    # llama.cpp reports its slots (/props total_slots): the node's cap follows it.
    assert stats[0]["cap"] == 16 and stats[0]["texts"] == 20


def test_real_server_long_input_with_truncate_false_names_the_row(llama):
    texts = ["short one", "word " * 5000, "another short one"]
    with sd.Embedder([sd.Node(llama.url, api="openai")], model="all-MiniLM-L6-v2") as emb:
        with pytest.raises(sd.InputError) as info:
            emb.embed(texts)
    assert info.value.row == 1


def test_an_ollama_node_at_llama_server_is_told_what_it_is(llama):
    with sd.Embedder([llama.url + "/api/embed"], model="all-MiniLM-L6-v2",
                     wait_for_nodes=1) as emb, pytest.warns(sd.FleetWarning):
        with pytest.raises(sd.NoNodeAvailableError) as info:
            emb.embed(["x"])
    hint = (f"{llama.url} is an OpenAI-compatible server (llama.cpp llama-server, serving "
            f"all-MiniLM-L6-v2), not an Ollama server: use Node('{llama.url}', api='openai') "
            f"(command line: --openai-node {llama.url})")
    assert info.value.reasons == {llama.url: "excluded: " + hint}


def test_llama_server_serving_another_model_is_refused_naming_both(llama):
    # llama-server answers any model name with its own model's vectors.
    with sd.Embedder([sd.Node(llama.url + "/v1/embeddings", api="openai")],
                     model="nomic-embed-text") as emb, pytest.warns(sd.FleetWarning):
        with pytest.raises(sd.ModelNotFoundError) as info:
            emb.embed(["x"])
    assert str(info.value) == (
        f"model 'nomic-embed-text' is on none of the nodes: {llama.url} serves "
        "all-MiniLM-L6-v2 (its /v1/models), not 'nomic-embed-text': its vectors would be "
        "labelled with the wrong model. Pass model='all-MiniLM-L6-v2', or start the server "
        "with 'nomic-embed-text' (llama-server: -a nomic-embed-text names its model)")
