import pickle

import pytest

import sollol_dask as sd
from sollol_dask._node import redact_url, resolve_nodes
from sollol_dask.cluster._plugin import RouterPlugin


def test_same_server_spelled_differently_is_merged():
    nodes = resolve_nodes(["http://localhost:11434", "http://127.0.0.1:11434/", "127.0.0.1:11434",
                           "http://LOCALHOST:11434", "http://127.0.0.1:11435"])
    assert [n.url for n in nodes] == ["http://localhost:11434", "http://127.0.0.1:11435"]


def test_default_ports_and_openai_v1_suffix():
    assert sd.Node("http://h").key == sd.Node("http://h:80").key
    assert sd.Node("http://h:8080/v1/", api="openai").url == "http://h:8080"


@pytest.mark.parametrize("api", ["ollama", "openai"])
@pytest.mark.parametrize("path", ["/api/embed", "/api/embeddings/", "/v1/embeddings", "/v1"])
def test_a_url_copied_with_an_endpoint_path_means_the_server(api, path):
    # `curl http://host:11434/api/embed` in a server's docs: the backend adds its own path.
    assert sd.Node("http://h:8080" + path, api=api).url == "http://h:8080"
    assert sd.Node("https://proxy/ollama" + path, api=api).url == "https://proxy/ollama"
    assert resolve_nodes(["http://h:11434/api/embed", "h:11434"])[0].url == "http://h:11434"
    assert len(resolve_nodes(["http://h:11434/api/embed", "h:11434"])) == 1


def test_environment_defaults(monkeypatch):
    monkeypatch.delenv("SOLLOL_NODES", raising=False)
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    assert [n.url for n in resolve_nodes(None)] == ["http://127.0.0.1:11434"]
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.2")
    assert [n.url for n in resolve_nodes(None)] == ["http://127.0.0.2:11434"]
    monkeypatch.setenv("SOLLOL_NODES", "http://127.0.0.3:1, 127.0.0.4:2")
    assert [n.url for n in resolve_nodes(None)] == ["http://127.0.0.3:1", "http://127.0.0.4:2"]


def test_bad_urls_and_values_say_what_to_do():
    with pytest.raises(sd.ConfigurationError, match="http://host:11434"):
        sd.Node("ftp://x")
    with pytest.raises(sd.ConfigurationError, match="api must be one of"):
        sd.Node("http://x", api="grpc")
    with pytest.raises(sd.ConfigurationError, match="max_inflight"):
        sd.Node("http://x", max_inflight=0)
    with pytest.raises(sd.ConfigurationError, match="no nodes"):
        resolve_nodes([])
    with pytest.raises(sd.ConfigurationError, match="model"):
        sd.Embedder(["http://127.0.0.1:1"], model="")


def test_secrets_never_in_repr():
    node = sd.Node("https://user:hunter2@proxy:443", api="openai",
                   headers={"X-Api-Key": "s3cret-token"})
    emb = sd.Embedder([node], model="m")
    plugin = RouterPlugin(emb.settings)
    # The pickles are what distributed logs at DEBUG when it ships the plugin or a graph.
    for shown in (repr(node), repr(emb), node.name, str(emb.settings.nodes), repr(emb.settings),
                  repr(plugin), repr(pickle.dumps(plugin)), repr(pickle.dumps(emb))):
        assert "s3cret-token" not in shown and "hunter2" not in shown
    again = pickle.loads(pickle.dumps(node))
    assert again == node and again.headers == node.headers  # sealed, not lost
    assert "Authorization" in repr(node) and "X-Api-Key" in repr(node)
    assert redact_url("http://a:b@h:1/p") == "http://a:***@h:1/p"


def test_sollol_nodes_takes_commas_and_or_whitespace(monkeypatch):
    monkeypatch.setenv("SOLLOL_NODES", "http://127.0.0.3:1 http://127.0.0.4:2,\n"
                                       "127.0.0.5:3 ,\thttp://127.0.0.6:4")
    assert [n.url for n in resolve_nodes(None)] == [
        "http://127.0.0.3:1", "http://127.0.0.4:2", "http://127.0.0.5:3", "http://127.0.0.6:4"]


def test_an_openai_node_is_marked_by_prefix_or_v1_base_url(monkeypatch):
    monkeypatch.setenv("SOLLOL_NODES", "http://gpu1:11434 openai+http://box:8080 "
                                       "https://vllm.internal/v1 OPENAI+box2:8081")
    assert [(n.url, n.api) for n in resolve_nodes(None)] == [
        ("http://gpu1:11434", "ollama"), ("http://box:8080", "openai"),
        ("https://vllm.internal", "openai"), ("http://box2:8081", "openai")]
    # the same rule for strings given to Embedder (and to the CLI's --node)
    emb = sd.Embedder(["openai+https://user:pw@proxy:8443/v1/", "http://v1:11434"], model="m")
    assert [(n.url, n.api) for n in emb.nodes] == [("https://proxy:8443", "openai"),
                                                  ("http://v1:11434", "ollama")]
    assert "Authorization" in emb.nodes[0].headers
    emb.close()
