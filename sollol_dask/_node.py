"""Embedding nodes as configuration: URL, API flavour, headers, cap and weight.

Pure data, no I/O. Two spellings of one server (``localhost`` and ``127.0.0.1``, a
trailing slash, an explicit default port) are the same node and are merged.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

from ._exceptions import ConfigurationError

APIS = ("ollama", "openai")
DEFAULT_NODE = "http://127.0.0.1:11434"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]", "ip6-localhost"}


@dataclasses.dataclass(frozen=True)
class Node:
    """One embedding server.

    ``api="ollama"`` speaks ``/api/embed``; ``api="openai"`` speaks ``/v1/embeddings``
    (llama.cpp ``llama-server``, vLLM, TEI, Infinity, Ollama's own /v1 route).
    ``headers`` (for example an ``Authorization`` token for a TLS proxy) are sent with
    every request and never shown: not in ``repr``, logs, errors or the dashboard.
    ``max_inflight`` overrides the per-backend default cap of concurrent requests;
    ``weight`` is a prior for the node's relative speed until it has been measured.
    """

    url: str
    api: str = "ollama"
    headers: Mapping[str, str] | None = dataclasses.field(default=None, compare=False)
    max_inflight: int | None = None
    weight: float | None = None

    def __post_init__(self) -> None:
        if self.api not in APIS:
            raise ConfigurationError(
                f"node {redact_url(self.url)!r}: api must be one of {APIS}, not {self.api!r}"
            )
        object.__setattr__(self, "url", normalize_url(self.url, self.api))
        if self.headers is not None:
            object.__setattr__(self, "headers", dict(self.headers))
        if self.max_inflight is not None and self.max_inflight < 1:
            raise ConfigurationError(f"node {self.name}: max_inflight must be >= 1")
        if self.weight is not None and not self.weight > 0:
            raise ConfigurationError(f"node {self.name}: weight must be > 0")

    @property
    def name(self) -> str:
        """The URL with any credentials removed: safe for logs, errors and pages."""
        return redact_url(self.url)

    @property
    def key(self) -> tuple[str, str, int]:
        """Identity of the server: scheme, canonical host, port."""
        parts = urlsplit(self.url)
        host = (parts.hostname or "").lower()
        if host in _LOOPBACK_NAMES:
            host = "127.0.0.1"
        port = parts.port or _DEFAULT_PORTS[parts.scheme]
        return (parts.scheme, host, port)

    def __repr__(self) -> str:
        shown = f"Node({self.name!r}, api={self.api!r}"
        if self.headers:
            shown += f", headers={{{', '.join(repr(k) + ': ***' for k in self.headers)}}}"
        if self.max_inflight is not None:
            shown += f", max_inflight={self.max_inflight}"
        if self.weight is not None:
            shown += f", weight={self.weight}"
        return shown + ")"


def normalize_url(url: str, api: str = "ollama") -> str:
    """Canonical base URL of a server: scheme and host lowercased, no trailing slash.

    A bare ``host:port`` gets ``http://``. For OpenAI-compatible servers a trailing
    ``/v1`` is dropped, since the backend adds it.
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError(f"a node URL must be a non-empty string, not {url!r}")
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ConfigurationError(
            f"node URL {redact_url(url)!r} is not an http:// or https:// address; "
            "write it as http://host:11434"
        )
    try:
        parts.port
    except ValueError as exc:
        raise ConfigurationError(f"node URL {redact_url(url)!r}: {exc}") from None
    path = parts.path.rstrip("/")
    if api == "openai" and path.endswith("/v1"):
        path = path[: -len("/v1")]
    return urlunsplit((parts.scheme, parts.netloc.lower(), path, "", ""))


def redact_url(url: object) -> str:
    """The URL without a password (``http://user:***@host``) for display."""
    text = str(url)
    try:
        parts = urlsplit(text)
    except ValueError:
        return "<unparsable url>"
    if parts.password is None and "@" not in parts.netloc:
        return text
    host = parts.netloc.rsplit("@", 1)[-1]
    user = parts.username or ""
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, ""))


def resolve_nodes(nodes: Iterable[str | Node] | str | Node | None) -> tuple[Node, ...]:
    """Turn what a user passed (or the environment) into distinct ``Node`` objects.

    With ``None``: ``SOLLOL_NODES`` (comma-separated), else ``OLLAMA_HOST``, else
    ``http://127.0.0.1:11434``. Later duplicates of a server are dropped.
    """
    if nodes is None:
        env = os.environ.get("SOLLOL_NODES") or os.environ.get("OLLAMA_HOST") or DEFAULT_NODE
        nodes = [part for part in env.split(",") if part.strip()]
    if isinstance(nodes, (str, Node)):
        nodes = [nodes]
    resolved: list[Node] = []
    seen: set[tuple[str, str, int]] = set()
    for item in nodes:
        node = item if isinstance(item, Node) else _node_from_text(item)
        if node.key in seen:
            continue
        seen.add(node.key)
        resolved.append(node)
    if not resolved:
        raise ConfigurationError("no nodes given: pass at least one URL such as http://host:11434")
    return tuple(resolved)


def _node_from_text(item: object) -> Node:
    if not isinstance(item, str):
        raise ConfigurationError(
            f"a node must be a URL string or sollol_dask.Node, not {type(item).__name__}"
        )
    # OLLAMA_HOST may be "0.0.0.0" or ":11434" (server-side bind spellings).
    text = item.strip()
    if text.startswith(":"):
        text = "127.0.0.1" + text
    if "://" not in text and ":" not in text:
        text += ":11434"
    return Node(text)
