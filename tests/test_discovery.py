"""Discovery: sources, identification, counting once, choosing, and what is contacted.

Hosts are 127.0.0.x addresses (Linux serves all of 127.0.0.0/8 on the loopback
interface): a sim on 127.0.0.3 stands for a machine. Nothing outside 127.0.0.0/8 is ever
contacted, and the scan test observes that (an audit hook sees every socket connect).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import sys
import threading
import time

import pytest

import sollol_dask as sd
from sollol_dask.cli import main
from sollol_dask.discovery import DiscoverySpec, ollama_host, scan
from sollol_dask.discovery._sources import Candidate

from .conftest import MODEL

_connects: list | None = None
_connects_lock = threading.Lock()


def _audit(event: str, args: tuple) -> None:
    if event == "socket.connect" and _connects is not None:
        address = args[1]
        if isinstance(address, tuple):
            with _connects_lock:
                _connects.append(address[:2])


sys.addaudithook(_audit)  # audit hooks cannot be removed: this one records only when asked


@pytest.fixture
def connects():
    """Every (host, port) this process connects to while the test runs."""
    global _connects
    _connects = []
    try:
        yield _connects
    finally:
        _connects = None


def free_port(*hosts: str) -> int:
    """A port free on every one of ``hosts``."""
    while True:
        probe = socket.socket()
        probe.bind((hosts[0], 0))
        port = probe.getsockname()[1]
        probe.close()
        try:
            for host in hosts:
                with socket.socket() as other:
                    other.bind((host, port))
            return port
        except OSError:
            continue


@pytest.fixture
def black_hole():
    """Listeners that accept connections and never answer (a host that hangs)."""
    made = []

    def open_at(host: str, port: int):
        listener = socket.socket()
        listener.bind((host, port))
        listener.listen(64)
        made.append(listener)

    yield open_at
    for listener in made:
        listener.close()


def test_a_scan_of_127_0_0_0_24_finds_exactly_the_servers_of_the_model(
        sims, black_hole, connects):
    port = free_port(*(f"127.0.0.{i}" for i in (2, 3, 4, 5, 6, 7, 9)))
    good = [sims("gpu", host="127.0.0.2", port=port),
            sims("gpu", host="127.0.0.3", port=port, also_on=("127.0.0.7",))]
    sims("gpu", host="127.0.0.4", port=port, model="all-minilm")
    sims("gpu", host="127.0.0.5", port=port, digest_variant="q4")
    sims("gpu", host="127.0.0.6", port=port, model=MODEL, dimension=384, digest_variant="q4")
    black_hole("127.0.0.9", port)
    spec = DiscoverySpec(env=False, local=False, ports=(port,), cidr=("127.0.0.0/24",),
                         timeout=1.5, connect_timeout=1.0)

    started = time.perf_counter()
    found = sd.discover(MODEL, spec=spec)
    seconds = time.perf_counter() - started

    assert [n.url for n in found.nodes] == [g.url for g in good]
    server = found.kept[1]
    assert server.addresses == [good[1].url, f"http://127.0.0.7:{port}"]  # counted once
    assert found.left_out == {
        f"http://127.0.0.4:{port}": f"does not serve {MODEL!r} (has: all-minilm:latest)",
        f"http://127.0.0.5:{port}": found.left_out[f"http://127.0.0.5:{port}"],
        f"http://127.0.0.6:{port}": found.left_out[f"http://127.0.0.6:{port}"],
    }
    assert "digest" in found.left_out[f"http://127.0.0.5:{port}"]
    assert "dimension 384, but the fleet uses 768" in found.left_out[f"http://127.0.0.6:{port}"]
    assert (found.asked, found.silent) == (254, 254 - 6)  # .9 hangs: silent too
    assert seconds < 4.0, f"the /24 scan took {seconds:.2f} s"
    print(f"\nscan of 127.0.0.0/24 (one port, one hanging host): {seconds:.2f} s")
    # Observed, not assumed: every connect went to the range, at the port given.
    contacted = set(connects)
    assert contacted, "the audit hook saw no connect"
    net = ipaddress.ip_network("127.0.0.0/24")
    assert all(ipaddress.ip_address(h) in net and p == port for h, p in contacted), \
        sorted(contacted)[:5]
    assert len({h for h, _ in contacted}) == 254


def test_the_table_names_kind_version_digest_loaded_vram_and_slots(sims, capsys):
    port = free_port("127.0.0.2", "127.0.0.4")
    node = sims("gpu", host="127.0.0.2", port=port)
    sims("gpu", host="127.0.0.4", port=port, model="all-minilm")
    code = main(["discover", "--model", MODEL, "--no-env", "--no-local", "--port", str(port),
                 "--cidr", "127.0.0.0/29", "--timeout", "1"])
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert code == 0
    assert lines[0].split() == ["URL", "SERVER", "MODEL", "DIGEST", "LOADED", "VRAM", "SLOTS"]
    assert lines[1].split() == [node.url, "ollama", "0.33.0-sim", f"{MODEL}:latest",
                                node.digest[:12], "no", "-", "1", "kept"]
    assert f"left out: does not serve {MODEL!r} (has: all-minilm:latest)" in lines[2]
    assert lines[-2].startswith("asked 6 addresses in ")
    assert lines[-2].endswith(": 1 server kept, 1 left out, 4 did not answer")
    assert lines[-1] == f"fleet: {MODEL} dimension 768, digest {node.digest[:12]}"


def test_discover_without_a_model_lists_every_model_and_exits_3_when_nothing_answers(
        capsys, sims):
    port = free_port("127.0.0.2")
    assert main(["discover", "--no-env", "--no-local", "--port", str(port),
                 "--host", "127.0.0.2", "--timeout", "1"]) == 3
    assert "no embedding server answered" in capsys.readouterr().out
    sims("gpu", host="127.0.0.2", port=port, extra_models=("all-minilm:latest",))
    assert main(["discover", "--no-env", "--no-local", "--port", str(port),
                 "--host", "127.0.0.2", "--timeout", "1"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[1].split()[:4] == [f"http://127.0.0.2:{port}", "ollama", "0.33.0-sim",
                                   f"{MODEL}:latest"]
    assert rows[2].split()[0] == "all-minilm:latest"  # every model, one row each
    assert rows[-1].endswith(": 1 server found, 0 did not answer")


@pytest.mark.parametrize("value, url", [
    ("", "http://127.0.0.1:11434"),
    ("0.0.0.0", "http://127.0.0.1:11434"),
    ("0.0.0.0:12345", "http://127.0.0.1:12345"),
    (":11500", "http://127.0.0.1:11500"),
    ("gpu1", "http://gpu1:11434"),
    ("gpu1:8000", "http://gpu1:8000"),
    ("http://gpu1", "http://gpu1:80"),  # as Ollama reads it: the scheme's port
    ("https://proxy.example/ollama", "https://proxy.example:443/ollama"),
    ("::1", "http://[::1]:11434"),
    ("[::1]:11500", "http://[::1]:11500"),
    ("[fe80::1]", "http://[fe80::1]:11434"),
    ("::", "http://127.0.0.1:11434"),
    ("  http://10.0.0.5:11434/  ", "http://10.0.0.5:11434"),
])
def test_ollama_host_is_read_as_ollama_reads_it(value, url):
    assert ollama_host(value).url == url


def test_env_and_local_ports_count_one_server_once(sims, monkeypatch, connects):
    node = sims("gpu")  # on 127.0.0.1
    monkeypatch.setenv("OLLAMA_HOST", f"localhost:{node.port}")
    monkeypatch.setenv("SOLLOL_NODES", f"http://127.0.0.1:{node.port}, 0.0.0.0:{node.port}")
    found = sd.discover(MODEL, ports=(node.port,), workers=False, timeout=2.0)
    assert [n.url for n in found.nodes] == [node.url]
    assert set(connects) <= {("127.0.0.1", node.port), ("::1", node.port)}


def test_a_dns_name_stands_for_every_address_it_has(sims):
    port = free_port("127.0.0.2", "127.0.0.3")
    a = sims("gpu", host="127.0.0.2", port=port)
    b = sims("gpu", host="127.0.0.3", port=port)
    asked = []

    async def headless_service(host, port, type=0):  # a Kubernetes headless Service
        asked.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))
                for ip in ("127.0.0.2", "127.0.0.3")]

    spec = DiscoverySpec(env=False, local=False, hosts=("embed.default.svc",), ports=(port,))
    found = asyncio.run(scan(MODEL, spec, getaddrinfo=headless_service))
    assert asked == ["embed.default.svc"]
    assert [n.url for n in found.nodes] == [a.url, b.url]


def test_a_range_larger_than_a_slash_20_is_refused():
    with pytest.raises(sd.ConfigurationError, match="at most 4096"):
        DiscoverySpec(cidr=("127.0.0.0/16",)).candidates({})


def test_candidates_are_exactly_the_sources_asked_for():
    spec = DiscoverySpec(ports=(11434,), cidr=("127.0.0.8/30",), hosts=("h1", "h2:99"))
    urls = [(c.url, c.source) for c in spec.candidates({"OLLAMA_HOST": "0.0.0.0"})]
    assert urls == [("http://127.0.0.1:11434", "OLLAMA_HOST"), ("http://127.0.0.1:11434", "local"),
                    ("http://127.0.0.9:11434", "cidr"), ("http://127.0.0.10:11434", "cidr"),
                    ("http://h1:11434", "hosts"), ("http://h2:99", "hosts")]
    assert DiscoverySpec(env=False, local=False).candidates({}) == []
    assert Candidate("http", "::1", 1, "x").url == "http://[::1]:1"


def answers(routes: dict):
    """A ``get`` that answers from ``routes`` ((method, path) -> (status, json)), 404 else."""
    asked = []

    async def get(method, path, payload):
        asked.append((method, path))
        return routes.get((method, path), (404, None))

    return get, asked


def test_llama_cpp_is_identified_by_its_props_with_slots_and_dimension():
    from sollol_dask.discovery import identify

    get, asked = answers({
        ("GET", "/props"): (200, {"total_slots": 8, "build_info": "b6000-abc"}),
        ("GET", "/v1/models"): (200, {"data": [{"id": "nomic-embed-text-v1.5.Q8_0.gguf",
                                                 "meta": {"n_embd": 768}}]})})
    server = asyncio.run(identify(get, "http://127.0.0.2:8080", MODEL))
    assert (server.kind, server.version, server.slots, server.api) == \
        ("llama.cpp", "b6000-abc", 8, "openai")
    assert server.model.name == "nomic-embed-text-v1.5.Q8_0.gguf"
    assert server.info.dimension == 768
    assert ("POST", "/v1/embeddings") not in asked  # n_embd said it: no embedding sent


def test_tei_is_identified_by_its_info_and_measured_with_one_short_embedding():
    from sollol_dask.discovery import identify

    get, asked = answers({
        ("GET", "/info"): (200, {"model_id": "BAAI/bge-small-en-v1.5", "model_sha": "5c38ec7",
                                 "version": "1.8.0"}),
        ("POST", "/v1/embeddings"): (200, {"data": [{"index": 0, "embedding": [0.6, 0.8]}]})})
    server = asyncio.run(identify(get, "http://127.0.0.2:80", "bge-small-en-v1.5"))
    assert (server.kind, server.version, server.model.digest) == ("tei", "1.8.0", "5c38ec7")
    assert (server.info.dimension, round(server.info.norm, 6)) == (2, 1.0)
    assert asked[-1] == ("POST", "/v1/embeddings")


def test_an_http_server_of_another_kind_is_reported_not_kept():
    from sollol_dask.discovery import NotEmbeddingServer, identify

    get, _ = answers({})
    with pytest.raises(NotEmbeddingServer, match="answers HTTP 404, but not as Ollama"):
        asyncio.run(identify(get, "http://127.0.0.2:80", MODEL))
