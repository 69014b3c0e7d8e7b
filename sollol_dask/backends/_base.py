"""What every backend shares: the request/response contract and error classification.

A backend turns texts into a request body and a response body into a float32 matrix. It
never chooses nodes and never touches sockets: probing goes through the ``Fetch``
callable the router hands it, so that httpx exceptions are mapped in one place.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np
import orjson

from .._exceptions import BadResponseError, InputError, ModelNotFoundError, NodeError

# fetch(method, path, json_body_or_None) -> (status, body bytes); raises NodeError when the
# node cannot be reached.
Fetch = Callable[[str, str, Any], Awaitable[tuple[int, bytes]]]


class Failure(enum.Enum):
    """How the router should react to a failed request."""

    TRANSIENT = "transient"  # try another node; counts towards ejecting this node
    NODE_FATAL = "node"  # this node cannot serve the run (auth, model missing): drop it
    CALLER = "caller"  # the caller's request is wrong: raise at once
    TOO_LONG = "too-long"  # a text exceeds the context: find the row and raise
    TOO_BIG = "too-big"  # the batch is larger than the server accepts: split it


@dataclasses.dataclass(frozen=True)
class EmbedOptions:
    """Request settings sent identically on every request (Ollama reloads on change)."""

    model: str
    truncate: bool = True
    keep_alive: str | None = None
    dimensions: int | None = None
    options: dict | None = None
    encoding: str = "base64"  # OpenAI route: base64 is smaller and far cheaper to parse


@dataclasses.dataclass
class NodeInfo:
    """What a probe learned about a node before it gets work."""

    dimension: int | None = None
    digest: str | None = None
    context_length: int | None = None
    total_slots: int | None = None
    loaded: bool | None = None
    version: str | None = None
    size: int | None = None  # bytes of the loaded model (Ollama /api/ps)
    size_vram: int | None = None  # of which in GPU memory (< size: partly on the CPU)


class Backend:
    """Base for wire formats; subclasses set ``api``, paths and the parse functions."""

    api: str = ""
    default_max_inflight: int = 2
    embed_path: str = ""

    def embed_body(self, texts: Sequence[str], opts: EmbedOptions) -> bytes:
        raise NotImplementedError

    def parse_embed(self, content: bytes, count: int, node: str) -> np.ndarray:
        raise NotImplementedError

    async def describe(self, fetch: Fetch, opts: EmbedOptions, node: str) -> NodeInfo:
        raise NotImplementedError

    def warm_body(self, opts: EmbedOptions) -> bytes | None:
        """A request that loads the model without embedding, or None if the API has none."""
        return None

    def error_message(self, content: bytes) -> str:
        """The server's error text from an error body, whatever its shape."""
        try:
            data = orjson.loads(content)
        except orjson.JSONDecodeError:
            return content[:300].decode("utf-8", "replace").strip()
        if isinstance(data, dict):
            err = data.get("error", data.get("message", data.get("detail", data)))
            if isinstance(err, dict):
                err = err.get("message", err)
            return str(err)
        return str(data)[:300]

    def classify(self, status: int, content: bytes, node: str, model: str) -> NodeError:
        """A ``NodeError`` for a non-200 answer, its ``.failure`` telling what to do."""
        text = self.error_message(content)
        lower = text.lower()
        kind = Failure.TRANSIENT
        hint = "it will be retried on another node"
        if status == 404 or ("model" in lower and "not found" in lower):
            err = ModelNotFoundError(
                f"model {model!r} not found on {node}: run `ollama pull {model}` there, "
                f"or remove the node (server said: {text})",
                node=node,
                status=status,
            )
            err.failure = Failure.NODE_FATAL
            return err
        if "context length" in lower or "context size" in lower or "too large to process" in lower:
            kind, hint = Failure.TOO_LONG, "a text is longer than the model's context"
        elif status in (413, 422) or "batch size" in lower and status < 500:
            kind, hint = Failure.TOO_BIG, "the batch is larger than the server accepts"
        elif status in (401, 403):
            kind = Failure.NODE_FATAL
            hint = "check the node's headers (token) or OLLAMA_HOST/OLLAMA_ORIGINS on that host"
        elif status == 400 and not _transient_400(lower):
            kind, hint = Failure.CALLER, "the request was rejected as invalid"
        err = NodeError(f"{node} answered HTTP {status}: {text} ({hint})", node=node, status=status,
                        retryable=kind not in (Failure.CALLER, Failure.TOO_LONG))
        err.failure = kind
        if kind is Failure.TOO_BIG:
            # TEI: "batch size 64 > maximum allowed batch size 32": the limit, when said.
            limit = re.search(r"maximum allowed batch size (\d+)", lower)
            err.max_inputs = int(limit.group(1)) if limit else None
        return err


def _transient_400(lower: str) -> bool:
    # Ollama reports runner crashes, NaN outputs and cancellations as 400s: another node
    # (or the same one a moment later) usually succeeds. See ollama-behaviour.md.
    return any(
        marker in lower
        for marker in ("eof", "nan", "inf value", "unsupported value", "cancel", "connection",
                       "runner", "timed out", "broken pipe", "reset by peer")
    )


def check_matrix(matrix: np.ndarray, count: int, node: str) -> np.ndarray:
    """Raise ``BadResponseError`` unless ``matrix`` is (count, dim) float32 and finite."""
    if matrix.ndim != 2 or matrix.shape[0] != count:
        raise BadResponseError(
            f"{node} returned {matrix.shape[0] if matrix.ndim else 0} vectors for {count} texts",
            node=node,
        )
    if not np.isfinite(matrix).all():
        bad = int(np.flatnonzero(~np.isfinite(matrix).all(axis=1))[0])
        raise BadResponseError(f"{node} returned a non-finite vector (batch item {bad})", node=node)
    return matrix


def malformed(node: str, why: str) -> BadResponseError:
    return BadResponseError(f"{node} sent a malformed embedding response: {why}", node=node)


def input_too_long(row: object, node: str, text: str) -> InputError:
    return InputError(
        f"row {row!r} is longer than the model's context on {node}: shorten or split it "
        "(Ollama nodes truncate by themselves unless truncate=False; OpenAI-compatible "
        f"servers such as llama.cpp never do) (server said: {text})",
        row=row,
    )
