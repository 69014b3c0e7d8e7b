"""The connection pool reads answers within bounds: size, pace, error pages, headers."""

from __future__ import annotations

import asyncio
import time

import pytest

from sollol_dask import NodeError
from sollol_dask.engine import _transport
from sollol_dask.engine._transport import NodePool
from sollol_dask import Failure

from .hostile import MIB, HostileNode, answer

@pytest.fixture
def node(sims):
    hostile = HostileNode(sims("gpu").url).start()
    yield hostile
    hostile.stop()


def on(path: str):
    return lambda request, _: request.path == path


def call(url: str, path: str, max_bytes: int, timeout: float = 10.0):
    async def run():
        pool = NodePool("http://n:1", url, None, 4)
        try:
            return await pool.request("GET", path, None, timeout, max_bytes)
        finally:
            await pool.aclose()

    return asyncio.run(run())


def test_an_endless_body_is_cut_at_the_limit(node):
    node.misbehave(on("/endless"), node.stream(500 * MIB))
    with pytest.raises(NodeError, match=r"http://n:1 sent more than 4 MiB in one answer: read "
                                        r"stopped and connection closed") as info:
        call(node.url, "/endless", 4 * MIB)
    assert info.value.failure is Failure.BAD_RESPONSE and info.value.hard
    assert node.sent["/endless"] < 16 * MIB  # was 500 MiB


def test_a_declared_length_over_the_limit_is_refused_before_reading(node):
    node.misbehave(on("/declared"), answer(200, b"x" * (5 * MIB)))
    with pytest.raises(NodeError, match=r"sent more than 4 MiB in one answer \(it announced "
                                        r"5,242,880 bytes\)"):
        call(node.url, "/declared", 4 * MIB)


def test_a_dripping_body_fails_after_the_grace(node, monkeypatch):
    monkeypatch.setattr(_transport, "_BODY_GRACE", 0.5)
    node.misbehave(on("/drip"), node.drip(0.05))
    started = time.monotonic()
    with pytest.raises(NodeError, match=r"sent only \d+ bytes of an answer's body in 0\.\d s") as info:
        call(node.url, "/drip", 4 * MIB, timeout=60.0)
    assert time.monotonic() - started < 5  # not the request's 60 s
    assert info.value.failure is Failure.BAD_RESPONSE


def test_error_pages_are_read_in_part_and_headers_kept(node):
    node.misbehave(on("/error"), answer(500, "E" * MIB, "text/plain"))
    node.misbehave(on("/busy"), answer(429, "{}", headers={"Retry-After": "7"}))
    node.misbehave(on("/moved"), answer(307, "", headers={"Location": "http://elsewhere/x"}))
    reply = call(node.url, "/error", 4 * MIB)
    assert (reply.status, len(reply.content)) == (500, 64 * 1024)
    assert call(node.url, "/busy", 4 * MIB).retry_after == "7"
    moved = call(node.url, "/moved", 4 * MIB)
    assert (moved.status, moved.location, moved.path) == (307, "http://elsewhere/x", "/moved")
