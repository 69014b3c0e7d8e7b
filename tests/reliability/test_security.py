"""Secrets stay secret; TLS is verified by default and a CA bundle can be given."""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from urllib.parse import quote

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from distributed import Client

import sollol_dask as sd
from sollol_dask.testing import Faults, sim_vectors

from ..conftest import MODEL, REPO, stop_process_groups
from ..tls_proxy import TlsProxy

SECRET = "Bearer super-secret-token-99"


def test_tls_is_verified_by_default_and_a_ca_bundle_can_be_passed(sims, tls):
    context, cert = tls
    node = sims("gpu", ssl_context=context)
    assert node.url.startswith("https://127.0.0.1:")
    with sd.Embedder([node.url], model=MODEL, probe_timeout=2) as emb:
        with pytest.raises(sd.NoNodeAvailableError, match="CERTIFICATE_VERIFY_FAILED|certificate"):
            emb.embed(["x"])
    with sd.Embedder([node.url], model=MODEL, verify=str(cert)) as emb:
        assert np.array_equal(emb.embed(["x", "y"]), sim_vectors(MODEL, ["x", "y"], 768))


def test_header_secrets_never_in_logs_errors_or_reprs(sims, caplog):
    flaky = sims("gpu", faults=Faults(eof_every=2, die_after=6))
    other = sims("gpu")
    nodes = [sd.Node(flaky.url, headers={"Authorization": SECRET}),
             sd.Node(other.url, headers={"X-Api-Key": SECRET})]
    caplog.set_level(logging.DEBUG)
    with sd.Embedder(nodes, model=MODEL) as emb:
        emb.embed([f"t{i}" for i in range(400)])
        shown = [repr(emb), str(emb.status()), emb.status()._repr_html_(), str(emb.node_stats())]
    dead = sd.Node("http://127.0.0.1:9", headers={"Authorization": SECRET})
    with sd.Embedder([dead], model=MODEL, probe_timeout=1) as emb:
        with pytest.raises(sd.SollolError) as info:
            emb.embed(["x"])
        shown.append(str(info.value))
    shown.append(caplog.text)
    assert "eof" in caplog.text.lower() or "answered HTTP 400" in caplog.text  # logs were made
    for text in shown:
        assert "super-secret" not in text


# -- helpers ---------------------------------------------------------------------------

TOKEN = "tok-Secret-7d1e9a"  # a header value
PASSWORD = "pa/ss#wo?rd-Secret-42"  # a URL password holding characters URLs reserve


def secret_forms(*values: str) -> list[str]:
    """Every form in which a value could leak: as typed, percent-encoded, inside a bytes
    repr (a DEBUG dump of what went over the wire), and inside a Basic header."""
    forms = []
    for value in values:
        forms += [value, quote(value, safe=""), repr(value.encode())[2:-1]]
    return [form.lower() for form in forms]  # the old code lowercased URL passwords


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def assert_no_secret(texts, *values: str) -> None:
    forms = secret_forms(*values)
    for text in texts:
        low = str(text).lower()
        for form in forms:
            at = low.find(form)
            assert at < 0, f"secret {form!r} shown in: ...{str(text)[max(0, at - 200):at + 100]}"


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(self.format(record))


@contextlib.contextmanager
def debug_logs():
    """Every record of every logger at DEBUG, third-party ones included ('distributed'
    has its own handler and does not propagate to the root)."""
    handler = _Capture()
    names = ("", "distributed", "asyncio", "aiohttp", "sollol_dask")
    saved = [(logging.getLogger(n), logging.getLogger(n).level) for n in names]
    for logger, _ in saved:
        logger.setLevel(logging.DEBUG)
    for logger in (logging.getLogger(), logging.getLogger("distributed")):
        logger.addHandler(handler)
    try:
        yield handler.texts
    finally:
        for logger in (logging.getLogger(), logging.getLogger("distributed")):
            logger.removeHandler(handler)
        for logger, level in saved:
            logger.setLevel(level)


@pytest.fixture
def tls_proxy():
    """nginx from Debian terminating TLS in front of a node, as fleets reach ``https://``
    nodes; it offers HTTP/2 and HTTP/1.1 by ALPN and logs each request's protocol."""
    started: list[TlsProxy] = []

    def start(upstream_url: str) -> TlsProxy:
        started.append(TlsProxy(upstream_url, log_protocols=True))
        return started[-1]

    yield start
    for proxy in started:
        proxy.stop()


# -- case 12: redaction ------------------------------------------------------------------

def test_url_credentials_are_sent_as_a_basic_header_and_never_echoed(auth_sims):
    for raw in ("http://user:12/34-Secret@host:11434", "http://user:pa#ss-Secret@host",
                "http://user:pa?ss-Secret@host"):
        with pytest.raises(sd.ConfigurationError, match="percent-encode the password") as info:
            sd.Node(raw)  # was: host "user" (or the password shown whole in the error)
        assert "'http://user:***@host" in str(info.value)
        assert "secret" not in str(info.value).lower()
    sim = auth_sims({"Authorization": basic("bob", PASSWORD)})
    url = f"http://bob:{quote(PASSWORD, safe='')}@{sim.url.removeprefix('http://')}"
    node = sd.Node(url)
    assert node.url == sim.url and node.name == sim.url
    assert node.headers == {"Authorization": basic("bob", PASSWORD)}
    with sd.Embedder([node], model=MODEL) as emb:
        assert np.array_equal(emb.embed(["x", "y"]), sim_vectors(MODEL, ["x", "y"], 768))
    with pytest.raises(sd.ConfigurationError, match="credentials in the URL and an Authorization"):
        sd.Node(url, headers={"authorization": "Bearer x"})


def test_no_secret_in_debug_logs_errors_or_pages_over_https_and_http(auth_sims, tls_proxy,
                                                                     tmp_path):
    quoted = quote(PASSWORD, safe="")
    # https:// through a real TLS proxy: one node whose backend wants these headers (so
    # they did go over the wire), one whose backend wants other ones (its 401 is logged)
    good = tls_proxy(auth_sims({"Authorization": basic("alice", PASSWORD),
                                "X-Api-Key": TOKEN}).url)
    refusing = tls_proxy(auth_sims({"Authorization": basic("alice", "other")}).url)
    https_nodes = [
        sd.Node(f"https://alice:{quoted}@{good.url.removeprefix('https://')}",
                headers={"X-Api-Key": TOKEN}),
        sd.Node(f"https://alice:{quoted}@{refusing.url.removeprefix('https://')}",
                headers={"X-Api-Key": TOKEN}),
    ]
    bundle = tmp_path / "proxies.pem"  # each proxy has its own self-signed certificate
    bundle.write_text(Path(good.ca).read_text() + Path(refusing.ca).read_text())
    # http:// (the same aiohttp pool without TLS): one that embeds, one that is down
    sim = auth_sims({"Authorization": basic("bob", PASSWORD), "X-Api-Key": TOKEN})
    http_nodes = [
        sd.Node(f"http://bob:{quoted}@{sim.url.removeprefix('http://')}",
                headers={"X-Api-Key": TOKEN}),
        sd.Node(f"http://carol:{quoted}@127.0.0.1:9", headers={"X-Api-Key": TOKEN}),
    ]
    texts = [f"text {i}" for i in range(300)]
    shown = []
    with debug_logs() as logs, warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        for nodes in (https_nodes, http_nodes):
            with sd.Embedder(nodes, model=MODEL, verify=str(bundle), probe_timeout=2) as emb:
                assert np.array_equal(emb.embed(texts), sim_vectors(MODEL, texts, 768))
                shown += [repr(emb), str(emb.status()), emb.status()._repr_html_(),
                          str(emb.node_stats())]
        with sd.Embedder(http_nodes[1:], model=MODEL, probe_timeout=1) as emb:
            with pytest.raises(sd.SollolError) as info:
                emb.embed(["x"])
            shown.append(str(info.value))
    said = logs + shown + [str(w.message) for w in warned]
    # What was said names the nodes' failures...
    assert any(f"{refusing.url} answered HTTP 401" in t for t in said), said
    assert any("cannot connect to http://127.0.0.1:9" in t for t in said)
    # ... and never a secret.
    assert_no_secret(said, TOKEN, PASSWORD, basic("alice", PASSWORD), basic("bob", PASSWORD),
                     basic("carol", PASSWORD))
    # The https:// node embedded over HTTP/1.1 keep-alive, though the proxy offers HTTP/2.
    embeds = [r for r in good.requests() if r[3] == "/api/embed"]
    assert embeds and {(version, status) for version, alpn, status, _ in good.requests()} == {
        ("HTTP/1.1", 200)}
    assert {alpn for _, alpn, _, _ in good.requests() + refusing.requests()} <= {"-", "http/1.1"}


def _plugin_blobs(dask_scheduler) -> list[bytes]:
    """What the scheduler keeps of each worker plugin (sent to workers that join later).
    (Run on the scheduler: refers to no secret, since its pickle is logged too.)"""
    return [bytes(blob) for blob in dask_scheduler.worker_plugins.values()]


def _node_texts(dask_worker) -> dict[str, int]:
    totals: dict[str, int] = {}
    for plugin in dask_worker.plugins.values():
        router = getattr(plugin, "router", None)
        for row in router.snapshot() if router is not None else []:
            totals[row["node"]] = totals.get(row["node"], 0) + row["texts"]
    return totals


@pytest.fixture
def debug_cluster(tmp_path):
    """`dask scheduler` and one `dask worker` with distributed logging at DEBUG (to files);
    the worker, only, has SOLLOL_TEST_TOKEN in its environment."""
    env = {k: v for k, v in os.environ.items() if k != "SOLLOL_TEST_TOKEN"}
    env.update(DASK_LOGGING__DISTRIBUTED="debug", PYTHONPATH=str(REPO))
    exe = str(Path(sys.executable).parent / "dask")
    sched_file, logs = tmp_path / "scheduler.json", {}
    procs = []

    def start(name: str, *args: str, **extra: str) -> None:
        logs[name] = tmp_path / f"{name}.log"
        procs.append(subprocess.Popen([exe, *args], env={**env, **extra}, start_new_session=True,
                                      stdout=subprocess.DEVNULL, stderr=logs[name].open("w")))

    start("scheduler", "scheduler", "--host", "127.0.0.1", "--port", "0",
          "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(sched_file))
    deadline = time.monotonic() + 30
    while not sched_file.exists():
        assert time.monotonic() < deadline, "dask scheduler did not start"
        time.sleep(0.05)
    start("worker", "worker", "--scheduler-file", str(sched_file), "--nthreads", "2",
          "--host", "127.0.0.1", "--no-dashboard", SOLLOL_TEST_TOKEN="Bearer " + TOKEN * 2)
    with Client(scheduler_file=str(sched_file)) as client:
        client.wait_for_workers(1, timeout=60)
        yield client, logs
    stop_process_groups(procs)


def test_scheduler_and_workers_never_show_a_secret_and_from_env_keeps_it_off_the_cluster(
        debug_cluster, auth_sims, monkeypatch):
    client, logs = debug_cluster
    monkeypatch.delenv("SOLLOL_TEST_TOKEN", raising=False)  # on the worker only
    literal = auth_sims({"Authorization": basic("bob", PASSWORD), "X-Api-Key": TOKEN})
    texts = [f"row {i}" for i in range(200)]
    ddf = dd.from_pandas(pd.DataFrame({"text": texts}), npartitions=4)

    def embed_on_cluster(emb: sd.Embedder) -> None:
        out = emb.embed_dataframe(ddf).compute()
        assert np.array_equal(np.stack(out["embedding"].to_numpy()), sim_vectors(MODEL, texts, 768))

    # 1. Literal secrets: the plugin the scheduler keeps and DEBUG logs of its transfer.
    quoted = quote(PASSWORD, safe="")
    node = sd.Node(f"http://bob:{quoted}@{literal.url.removeprefix('http://')}",
                   headers={"X-Api-Key": TOKEN})
    with sd.Embedder([node], model=MODEL) as emb:
        embed_on_cluster(emb)
        shown = [str(emb.status(client)), emb.status(client)._repr_html_()]
    blobs = client.run_on_scheduler(_plugin_blobs)
    scheduler_log, worker_log = logs["scheduler"].read_text(), logs["worker"].read_text()
    assert "register_worker_plugin" in scheduler_log and "plugin-add" in worker_log
    assert_no_secret([scheduler_log, worker_log, *shown, *(repr(b) for b in blobs)],
                     TOKEN, PASSWORD, basic("bob", PASSWORD))

    # 2. FromEnv: the token is read on the worker; the client never has it.
    from_env = auth_sims({"Authorization": "Bearer " + TOKEN * 2})
    env_node = sd.Node(from_env.url, headers={"Authorization": sd.FromEnv("SOLLOL_TEST_TOKEN")})
    assert repr(env_node) == f"Node('{from_env.url}', api='ollama', " \
                             "headers={'Authorization': FromEnv('SOLLOL_TEST_TOKEN')})"
    # This process cannot use env_node (a FleetWarning says why); the worker can.
    with pytest.warns(sd.FleetWarning, match="environment variable SOLLOL_TEST_TOKEN is not set"), \
            sd.Embedder([node, env_node], model=MODEL) as emb:
        embed_on_cluster(emb)
    per_node = client.run(_node_texts)
    assert sum(texts.get(from_env.url, 0) for texts in per_node.values()) > 0
    blobs = client.run_on_scheduler(_plugin_blobs)
    assert_no_secret([logs["scheduler"].read_text(), logs["worker"].read_text(),
                      *(repr(b) for b in blobs)], TOKEN * 2)


# -- case 13: TLS ------------------------------------------------------------------------

def test_verify_false_warns_and_a_missing_ca_bundle_is_named(sims, tls, caplog, tmp_path):
    context, cert = tls
    node = sims("gpu", ssl_context=context)
    with pytest.warns(sd.InsecureTLSWarning,
                      match=f"TLS certificate verification is off for {node.url}"):
        emb = sd.Embedder([node.url, "http://127.0.0.1:9"], model=MODEL, verify=False)
    # Only https:// nodes are named: nothing is verified on http:// ones anyway.
    assert f"TLS certificate verification is off (verify=False) for {node.url}\n" in caplog.text
    with emb:
        assert np.array_equal(emb.embed(["x"]), sim_vectors(MODEL, ["x"], 768))
    missing = tmp_path / "no-such-ca.pem"
    with pytest.raises(sd.ConfigurationError, match=f"verify='{missing}': no such CA bundle file"):
        sd.Embedder([node.url], model=MODEL, verify=str(missing))  # was: "not answering"
    not_pem = tmp_path / "notes.txt"
    not_pem.write_text("not a certificate")
    with pytest.raises(sd.ConfigurationError, match="cannot use it as a CA bundle"):
        sd.Embedder([node.url], model=MODEL, verify=not_pem)
    # Present where the Embedder is made, absent where requests are sent (as on a worker).
    here = tmp_path / "ca.pem"
    here.write_bytes(cert.read_bytes())
    with sd.Embedder([node.url], model=MODEL, verify=str(here), probe_timeout=2) as emb:
        here.unlink()
        with pytest.warns(sd.FleetWarning), \
                pytest.raises(sd.NoNodeAvailableError, match=f"CA bundle '{here}' cannot be read"):
            emb.embed(["x"])
