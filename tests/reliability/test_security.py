"""Secrets stay secret; TLS is verified by default and a CA bundle can be given."""

from __future__ import annotations

import logging
import ssl
import subprocess

import numpy as np
import pytest

import sollol_dask as sd
from sollol_dask.sim import Faults, sim_vectors

from ..conftest import MODEL

SECRET = "Bearer super-secret-token-99"


@pytest.fixture
def tls(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context, cert


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
