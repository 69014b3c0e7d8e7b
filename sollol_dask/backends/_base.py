"""What every backend shares: the request/response contract and error classification.

A backend turns texts into a request body and a response body into a float32 matrix,
checked row by row (``_checks``). It never chooses nodes and never touches sockets:
probing goes through the ``Fetch`` callable the router hands it, so that HTTP libraries'
exceptions are mapped in one place (``_transport``), and every decoding error of a
node's answer becomes a ``BadResponseError`` here.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urljoin

import numpy as np
import orjson

from .._exceptions import BadResponseError, InputError, ModelNotFoundError, NodeError
from ..policy._limits import SERVER_TEXT_CHARS, clip, retry_after_seconds
from .._outcome import Failure
from ..policy._identity import NodeInfo
from .._node import redact_url


@dataclasses.dataclass(frozen=True)
class Reply:
    """A node's answer as the transport read it (its body bounded in size)."""

    status: int
    content: bytes
    path: str = ""  # the request's path, for messages
    retry_after: str | None = None  # the Retry-After header, unparsed
    location: str | None = None  # the Location header of a redirect


# {"error": "text... or {"error": {"message": "text... at the start of a cut-off JSON body
_ERROR_FIELD = re.compile(r'^\{\s*"(?:error|message|detail)"\s*:\s*(?:\{[^{}"]*?"message"\s*:\s*)?'
                          r'"((?:[^"\\]|\\.)*)')

# fetch(method, path, body_bytes_or_None) -> Reply; raises NodeError when the node cannot
# be reached or its answer is too large. Backends hand their own JSON to a FetchJson.
Fetch = Callable[[str, str, bytes | None], Awaitable[Reply]]
FetchJson = Callable[[str, str, Any], Awaitable[Reply]]


@dataclasses.dataclass(frozen=True)
class EmbedOptions:
    """Request settings sent identically on every request (Ollama reloads on change)."""

    model: str
    truncate: bool = True
    keep_alive: str | None = None
    dimensions: int | None = None
    options: dict | None = None
    encoding: str = "base64"  # OpenAI route: base64 is smaller and far cheaper to parse
    # Put before every text ("search_document: " for nomic-embed-text): it changes the
    # vectors, so it is part of a run's identity. Applied by the callers, not the wire format.
    prefix: str = ""


class Backend:
    """Base for wire formats; subclasses set ``api``, paths and the parse functions."""

    api: str = ""
    default_max_inflight: int = 2
    embed_path: str = ""
    tokenize_path: str | None = None  # a route that counts a text's tokens, if the API has one

    def tokenize_body(self, text: str, opts: EmbedOptions) -> bytes:
        raise NotImplementedError

    def parse_token_count(self, reply: Reply) -> int | None:
        """The tokens a tokenizer answer lists; None for any other answer."""
        return None

    def embed_body(self, texts: Sequence[str], opts: EmbedOptions) -> bytes:
        raise NotImplementedError

    def encode_embed(self, texts: list[str], labels: list, opts: EmbedOptions) -> bytes:
        """``embed_body``, with a text JSON cannot carry (a lone surrogate) named by row."""
        try:
            return self.embed_body(texts, opts)
        except orjson.JSONEncodeError as exc:
            raise unencodable(texts, labels, exc) from None

    def parse_embed(self, content: bytes, count: int, node: str, *,
                    dimension: int | None = None, norm: float | None = None) -> np.ndarray:
        """The (count, dim) float32 matrix of an answer, rows in input order, every row
        checked (see ``_checks.check_rows``); ``dimension`` and ``norm`` are the fleet's."""
        return self.parse_answer(content, count, node, dimension=dimension, norm=norm)[0]

    def parse_answer(self, content: bytes, count: int, node: str, *,
                     dimension: int | None = None,
                     norm: float | None = None) -> tuple[np.ndarray, int | None]:
        """``parse_embed``'s matrix and the tokens the server says it processed for the
        request (Ollama's ``prompt_eval_count``, OpenAI's ``usage``), None if it says not."""
        raise NotImplementedError

    async def describe(self, fetch: Fetch, opts: EmbedOptions, node: str) -> NodeInfo:
        """What the node serves. Anything in its answers that does not decode as expected
        (a proxy's HTML page, a list where a dict belongs) is a ``BadResponseError``:
        a failed probe, never an exception that escapes the router's probing tasks."""
        try:
            async def fetch_json(method: str, path: str, payload: Any) -> Reply:
                return await fetch(method, path,
                                   orjson.dumps(payload) if payload is not None else None)

            return await self._describe(fetch_json, opts, node)
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError,
                IndexError) as exc:
            why = f"{type(exc).__name__}: {exc}"
            what = "answer to a probe"
        except Undecodable as exc:
            why, what = exc.why, exc.what
        # Most likely a proxy's page while the node restarts: a failed probe, tried again
        # after the usual back-off. Strikes are for answers a node gets wrong, not garbled.
        raise malformed(node, why, what, failure=Failure.TRANSIENT) from None

    async def _describe(self, fetch: FetchJson, opts: EmbedOptions, node: str) -> NodeInfo:
        raise NotImplementedError

    def probe_json(self, reply: Reply, node: str, model: str, *, optional: bool = False) -> Any:
        """The decoded body of a probe's answer. A route that is ``optional`` and missing
        or failing gives None; a redirect or refused credentials raise on any route."""
        if reply.status == 200:
            try:
                return orjson.loads(reply.content)
            except orjson.JSONDecodeError as exc:
                raise malformed(node, f"{exc} (body starts {reply.content[:60]!r})",
                                f"answer to {reply.path}") from None
        if optional and not (300 <= reply.status < 400 or reply.status in (401, 403)):
            return None
        raise self.classify_reply(reply, node, model)

    def warm_body(self, opts: EmbedOptions) -> bytes | None:
        """A request that loads the model without embedding, or None if the API has none."""
        return None

    def error_message(self, content: bytes) -> str:
        """The server's error text from an error body, whatever its shape, clipped: it is
        the node's to choose and ends up in exceptions, logs and metrics."""
        try:
            data = orjson.loads(content)
        except orjson.JSONDecodeError:
            # Cut at ERROR_BODY_BYTES, a JSON error body no longer parses: quote its text.
            text = content[:4096].decode("utf-8", "replace").strip()
            quoted = _ERROR_FIELD.search(text)
            text = quoted.group(1) if quoted else text
            # How long the whole text was is unknown (the body was cut): no count.
            return text if len(text) <= SERVER_TEXT_CHARS else text[:SERVER_TEXT_CHARS] + "... (cut)"
        if isinstance(data, dict):
            err = data.get("error", data.get("message", data.get("detail", data)))
            if isinstance(err, dict):
                err = err.get("message", err)
            return clip(err, SERVER_TEXT_CHARS)
        return clip(data, SERVER_TEXT_CHARS)

    def missing_model(self, model: str, node: str, text: str,
                      status: int | None = 404) -> ModelNotFoundError:
        """The error for a node that does not serve ``model``, with this API's fix."""
        return ModelNotFoundError(
            f"model {model!r} not found on {node}: run `ollama pull {model}` there, "
            f"or remove the node (server said: {text})", node=node, status=status)

    def classify_reply(self, reply: Reply, node: str, model: str) -> NodeError:
        """``classify`` for a reply as the transport returns it (headers included)."""
        return self.classify(reply.status, reply.content, node, model,
                             retry_after=reply.retry_after, location=reply.location,
                             path=reply.path)

    def classify(self, status: int, content: bytes, node: str, model: str, *,
                 retry_after: str | None = None, location: str | None = None,
                 path: str = "") -> NodeError:
        """A ``NodeError`` for a non-200 answer, its ``.failure`` telling what to do."""
        if 300 <= status < 400:
            return redirected(status, node, location, path)
        text = self.error_message(content)
        lower = text.lower()
        kind = Failure.TRANSIENT
        hint = "it will be retried on another node"
        wait = retry_after_seconds(retry_after) if status in (429, 503) else None
        if status == 404 or ("model" in lower and "not found" in lower):
            return self.missing_model(model, node, text, status)
        if wait is not None:
            kind = Failure.BUSY
            hint = f"it asked to wait {wait:g} s (Retry-After); other nodes take the work meanwhile"
        elif "context length" in lower or "context size" in lower or "too large to process" in lower:
            kind, hint = Failure.TOO_LONG, "a text is longer than the model's context"
        elif status in (413, 422) or "batch size" in lower and status < 500:
            kind, hint = Failure.TOO_BIG, "the batch is larger than the server accepts"
        elif status in (401, 403):
            kind = Failure.NODE_FATAL
            hint = "check the node's headers (token) or OLLAMA_HOST/OLLAMA_ORIGINS on that host"
        elif status == 400 and not _transient_400(lower):
            kind, hint = Failure.CALLER, "the request was rejected as invalid"
        max_inputs = None
        if kind is Failure.TOO_BIG:
            # TEI: "batch size 64 > maximum allowed batch size 32": the limit, when said.
            limit = re.search(r"maximum allowed batch size (\d+)", lower)
            max_inputs = int(limit.group(1)) if limit else None
        return NodeError(f"{node} answered HTTP {status}: {text} ({hint})", node=node,
                         status=status, retryable=kind not in (Failure.CALLER, Failure.TOO_LONG),
                         failure=kind, retry_after=wait, max_inputs=max_inputs)


def redirected(status: int, node: str, location: str | None, path: str) -> NodeError:
    """A redirect is configuration, not a passing fault: requests are never followed to
    another address (headers such as a token must not be sent elsewhere), so the user
    is told which URL to configure instead."""
    if location:
        target = urljoin(node.rstrip("/") + (path or "/"), location.strip())
        base = target[: -len(path)] if path and target.endswith(path) else target
        where = f"redirects to {clip(redact_url(target), 200)} (HTTP {status}): configure " \
                f"the node as {clip(redact_url(base), 200)} instead"
    else:
        where = f"answered with a redirect (HTTP {status}) without a Location: check its URL"
    return NodeError(f"{node} {where}; redirects are not followed, so that headers are never "
                     "sent to another address", node=node, status=status, retryable=False,
                     failure=Failure.NODE_FATAL)


def bad_response(node: str, message: str) -> BadResponseError:
    return BadResponseError(message, node=node, failure=Failure.BAD_RESPONSE)


class Undecodable(BadResponseError):
    """A body that does not decode as the wire format says (HTML from a proxy, cut JSON)."""

    def __init__(self, message: str, *, node: str | None = None, why: str = "",
                 what: str = "", failure: Failure = Failure.BAD_RESPONSE) -> None:
        super().__init__(message, node=node, failure=failure)
        self.why, self.what = why, what


def malformed(node: str, why: str, what: str = "embedding response",
              failure: Failure = Failure.BAD_RESPONSE) -> BadResponseError:
    return Undecodable(f"{node} sent a malformed {what}: {clip(why, 200)}", node=node,
                       why=why, what=what, failure=failure)


def _transient_400(lower: str) -> bool:
    # Ollama reports runner crashes, NaN outputs and cancellations as 400s: another node
    # (or the same one a moment later) usually succeeds. See ollama-behaviour.md.
    return any(
        marker in lower
        for marker in ("eof", "nan", "inf value", "unsupported value", "cancel", "connection",
                       "runner", "timed out", "broken pipe", "reset by peer")
    )


def input_too_long(row: object, node: str, text: str) -> InputError:
    return InputError(
        f"row {row!r} is longer than the model's context on {node}: shorten or split it "
        "(Ollama nodes truncate by themselves unless truncate=False; OpenAI-compatible "
        f"servers such as llama.cpp never do) (server said: {text})",
        row=row,
    )


def unencodable(texts: list[str], labels: list, exc: Exception) -> InputError:
    """The row that orjson could not encode (a lone surrogate), named."""
    for text, label in zip(texts, labels):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as bad:
            return InputError(
                f"row {label!r} is not valid Unicode text (a lone surrogate at character "
                f"{bad.start}): clean it, e.g. text.encode('utf-8', 'replace').decode()",
                row=label,
            )
    return InputError(f"rows {labels[0]!r}..{labels[-1]!r} cannot be sent as JSON: {exc}")

