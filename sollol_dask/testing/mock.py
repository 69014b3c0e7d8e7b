"""A socket-free pool for unit tests of the engine, in the spirit of ``httpx.MockTransport``.

    def handler(request: MockRequest) -> tuple[int, bytes] | Reply:
        ...                       # or raise a NodeError (refused, timed out)

    router = Router(settings, open_pool=MockTransport(handler), clock=clock, sleep=sleep)

``FakeOllama`` is a ready handler: a node that describes itself and embeds like Ollama,
with knobs for the failures the engine must handle.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
from collections.abc import Callable

import numpy as np
import orjson

from ..backends import Reply


@dataclasses.dataclass(frozen=True)
class MockRequest:
    node: str  # the node's name (its URL)
    method: str
    path: str
    body: bytes | None
    timeout: float
    max_bytes: int

    def json(self):
        return orjson.loads(self.body) if self.body else None


Handler = Callable[[MockRequest], object]


class MockPool:
    """A node's pool whose answers come from ``handler``; every request is kept."""

    def __init__(self, name: str, handler: Handler, log: list[MockRequest]) -> None:
        self.name = name
        self._handler = handler
        self._log = log
        self.closed = False

    async def request(self, method: str, path: str, body: bytes | None, timeout: float,
                      max_bytes: int) -> Reply:
        request = MockRequest(self.name, method, path, body, timeout, max_bytes)
        self._log.append(request)
        answer = self._handler(request)
        if inspect.isawaitable(answer):
            answer = await answer
        if isinstance(answer, Reply):
            return answer
        status, content = answer
        return Reply(status, content, path)

    async def aclose(self) -> None:
        self.closed = True


class MockTransport:
    """A pool factory (``Router(open_pool=...)``): every node's requests go to ``handler``,
    or to ``handlers[node]`` when given per node. ``requests`` lists them all, in order."""

    def __init__(self, handler: Handler | dict[str, Handler]) -> None:
        self._handler = handler
        self.requests: list[MockRequest] = []
        self.pools: dict[str, MockPool] = {}

    def __call__(self, name: str, url: str, headers, connections: int, verify) -> MockPool:
        handler = self._handler[name] if isinstance(self._handler, dict) else self._handler
        pool = self.pools[name] = MockPool(name, handler, self.requests)
        return pool

    def embeds(self, node: str | None = None) -> list[MockRequest]:
        """The embedding requests (with input), of one node or all."""
        return [r for r in self.requests if r.path == "/api/embed" and r.json()["input"]
                and (node is None or r.node == node)]


def vector(text: str, dimension: int) -> np.ndarray:
    """A deterministic unit vector for ``text``."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    v = np.random.default_rng(seed).standard_normal(dimension)
    return (v / np.linalg.norm(v)).astype(np.float32)


@dataclasses.dataclass
class FakeOllama:
    """An Ollama node as a handler. ``fail(request)`` may return an answer (or raise) to
    replace the normal one; ``max_inputs`` refuses larger batches with 413;
    ``context`` refuses texts longer than that many characters."""

    model: str = "m"
    dimension: int = 4
    digest: str = "sha256:aaaa"
    loaded: bool = True
    max_inputs: int | None = None
    context: int | None = None
    fail: Callable[[MockRequest], object] | None = None

    def __call__(self, request: MockRequest):
        if self.fail is not None:
            answer = self.fail(request)
            if answer is not None:
                return answer
        if request.path == "/api/version":
            return 200, b'{"version": "0.33.0-mock"}'
        if request.path == "/api/tags":
            return 200, orjson.dumps({"models": [{"name": self.model + ":latest",
                                                  "model": self.model + ":latest",
                                                  "digest": self.digest}]})
        if request.path == "/api/show":
            return 200, orjson.dumps({"model_info": {"x.embedding_length": self.dimension,
                                                     "x.context_length": 2048}})
        if request.path == "/api/ps":
            models = [{"name": self.model + ":latest", "size": 1}] if self.loaded else []
            return 200, orjson.dumps({"models": models})
        if request.path == "/api/embed":
            texts = request.json()["input"]
            if not texts:
                self.loaded = True
                return 200, b'{"embeddings": []}'
            if self.max_inputs is not None and len(texts) > self.max_inputs:
                return 413, b'{"error": "too many inputs"}'
            if self.context is not None and any(len(t) > self.context for t in texts):
                return 400, b'{"error": "the input length exceeds the context length"}'
            rows = [vector(t, self.dimension).tolist() for t in texts]
            return 200, orjson.dumps({"embeddings": rows})
        return 404, b'{"error": "not found"}'
