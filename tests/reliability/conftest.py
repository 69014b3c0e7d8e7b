"""Fixtures of the reliability tests: a self-signed certificate, nodes that want a token."""

from __future__ import annotations

import ssl
import subprocess

import pytest

from sollol_dask.testing.sim import _handlers as sim_handlers


@pytest.fixture
def tls(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context, cert


@pytest.fixture
def auth_sims(sims, monkeypatch):
    """Simulated nodes that answer 401 unless a request carries the given headers."""
    required: dict[int, dict[str, str]] = {}

    def prepare(handler) -> None:
        want = required.get(handler.node.port, {})
        if any(handler.request.headers.get(k) != v for k, v in want.items()):
            handler.set_status(401)
            handler.finish(b'{"error": "unauthorized"}')

    monkeypatch.setattr(sim_handlers._Base, "prepare", prepare, raising=False)

    def start(headers: dict[str, str], profile: str = "gpu", **kwargs):
        node = sims(profile, **kwargs)
        required[node.port] = headers
        return node

    return start
