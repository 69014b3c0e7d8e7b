"""One node as the engine talks to it: its wire format (backend) and its connection pool.

An ``Endpoint`` sends a batch and reads back checked vectors, describes the node (what
it serves) and warms its model. Pools come from a factory, ``open_pool`` by default; unit
tests pass ``testing.mock.MockPool`` and no socket is opened.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Protocol

import numpy as np

from .._exceptions import SollolError
from .._node import Node
from .._settings import RouterSettings
from ..backends import BACKENDS, Backend, Reply
from ..policy._identity import NodeInfo, Reference
from ..policy._limits import PROBE_BYTES, embed_limit
from ._transport import open_pool


class Pool(Protocol):
    """What an endpoint needs of a connection pool (``_transport.NodePool``)."""

    async def request(self, method: str, path: str, body: bytes | None,
                      timeout: float, max_bytes: int) -> Reply: ...

    async def aclose(self) -> None: ...


# open_pool(name, url, headers, connections, verify) -> Pool
PoolFactory = Callable[..., Pool]


class Endpoint:
    def __init__(self, node: Node, settings: RouterSettings, connections: Callable[[], int],
                 open_pool: PoolFactory = open_pool) -> None:
        self.node = node
        self.name = node.name
        self.backend: Backend = BACKENDS[node.api]
        self.settings = settings
        self._connections = connections  # asked when the pool opens: the node's cap by then
        self._open_pool = open_pool
        self._pool: Pool | None = None
        # Whether the node may count tokens (llama.cpp /tokenize); False once it did not.
        self.has_tokenizer = self.backend.tokenize_path is not None

    async def request(self, method: str, path: str, body: bytes | None, timeout: float,
                      max_bytes: int) -> Reply:
        """One HTTP exchange, its body bounded; transport failures arrive as ``NodeError``.
        The pool is opened on first use, on the router's loop (it belongs to that loop)."""
        if self._pool is None:
            self._pool = self._open_pool(self.name, self.node.url, self.node.headers,
                                         self._connections(), self.settings.verify)
        return await self._pool.request(method, path, body, timeout, max_bytes)

    async def embed(self, texts: list[str], labels: list, timeout: float,
                    reference: Reference | None,
                    truncate: bool | None = None) -> tuple[np.ndarray, int | None]:
        """The batch's vectors, every row checked: count, order, finite, non-zero, and the
        fleet's dimension and norm (once the fleet has a reference); and the tokens the
        server reports for the request (None if it reports none). ``truncate``: this
        request's own truncate option (None: the run's)."""
        opts = self.settings.opts
        if truncate is not None and truncate != opts.truncate:
            opts = dataclasses.replace(opts, truncate=truncate)
        body = self.backend.encode_embed(texts, labels, opts)
        limit = embed_limit(len(texts), reference.dimension if reference else None,
                            self.settings.max_response_bytes)
        reply = await self.request("POST", self.backend.embed_path, body, timeout, limit)
        if reply.status != 200:
            raise self.backend.classify_reply(reply, self.name, opts.model)
        return self.backend.parse_answer(reply.content, len(texts), self.name,
                                         dimension=reference.dimension if reference else None,
                                         norm=reference.norm if reference else None)

    async def count_tokens(self, text: str) -> int | None:
        """``text``'s tokens by the node's own tokenizer (special tokens included), or
        None if it has none (then it is not asked again) or cannot answer now."""
        if not self.has_tokenizer:
            return None
        body = self.backend.tokenize_body(text, self.settings.opts)
        try:
            reply = await self.request("POST", self.backend.tokenize_path, body,
                                       self.settings.probe_timeout, PROBE_BYTES + 16 * len(text))
        except SollolError:
            return None  # unreachable now: the estimate serves, the node's faults are the runner's
        counted = self.backend.parse_token_count(reply)
        # Only "no such route" means no tokenizer; a 429 or 408 from a proxy is for now.
        if counted is None and reply.status in (404, 405, 501):
            self.has_tokenizer = False
        return counted

    async def describe(self) -> NodeInfo:
        """What the node serves (dimension, digest, slots, whether the model is loaded)."""

        async def fetch(method: str, path: str, body: bytes | None) -> Reply:
            return await self.request(method, path, body, self.settings.probe_timeout,
                                      PROBE_BYTES)

        return await self.backend.describe(fetch, self.settings.opts, self.name)

    @property
    def can_warm(self) -> bool:
        return self.backend.warm_body(self.settings.opts) is not None

    async def warm(self) -> None:
        """Load the node's model without embedding; raises what the node answered."""
        reply = await self.request("POST", self.backend.embed_path,
                                   self.backend.warm_body(self.settings.opts),
                                   self.settings.first_timeout, PROBE_BYTES)
        if reply.status != 200:
            raise self.backend.classify_reply(reply, self.name, self.settings.opts.model)

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
