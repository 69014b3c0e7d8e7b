"""Embedding nodes as configuration: URL, API flavour, headers, cap and weight.

Pure data, no I/O. Two spellings of one server (``localhost`` and ``127.0.0.1``, a
trailing slash, an explicit default port) are the same node and are merged. Credentials
in a URL (``https://user:password@proxy``) become an ``Authorization: Basic`` header, so
the URL libraries log never holds them and the redaction layer (``_redact``) masks them.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable, Mapping
from urllib.parse import unquote, urlsplit, urlunsplit

from ._exceptions import ConfigurationError
from ._redact import redact_url
from ._secrets import FromEnv, basic_auth, check_headers, seal_headers, unseal_headers

APIS = ("ollama", "openai")
DEFAULT_NODE = "http://127.0.0.1:11434"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]", "ip6-localhost"}
OPENAI_PREFIX = "openai+"  # openai+http://box:8080: an OpenAI-compatible node in a URL string
# Endpoint paths users copy from a server's docs (`curl http://host:11434/api/embed`):
# the backend adds its own, so a node URL ending in one of them means the server's base.
ENDPOINT_SUFFIXES = ("/api/embed", "/api/embeddings", "/v1/embeddings", "/v1")


@dataclasses.dataclass(frozen=True)
class Node:
    """One embedding server.

    ``api="ollama"`` speaks ``/api/embed``; ``api="openai"`` speaks ``/v1/embeddings``
    (llama.cpp ``llama-server``, vLLM, TEI, Infinity, Ollama's own /v1 route).
    ``headers`` (for example an ``Authorization`` token for a TLS proxy) are sent with
    every request and never shown: not in ``repr``, logs, errors or the dashboard. A
    value may be :class:`FromEnv` (read from an environment variable on each worker, so
    the token never travels through the cluster). ``user:password@`` in the URL becomes
    an ``Authorization: Basic`` header; percent-encode ``/ ? # @`` in a password.
    ``max_inflight`` overrides the per-backend default cap of concurrent requests;
    ``weight`` is a prior for the node's relative speed until it has been measured.
    """

    url: str
    api: str = "ollama"
    headers: Mapping[str, str | FromEnv] | None = dataclasses.field(default=None, compare=False)
    max_inflight: int | None = None
    weight: float | None = None

    def __post_init__(self) -> None:
        if self.api not in APIS:
            raise ConfigurationError(
                f"node {redact_url(self.url)!r}: api must be one of {APIS}, not {self.api!r}"
            )
        url, credentials = split_credentials(self.url)
        url = normalize_url(url)
        headers = check_headers(self.headers, url)
        if credentials is not None:
            if any(name.lower() == "authorization" for name in headers or {}):
                raise ConfigurationError(
                    f"node {url}: credentials in the URL and an Authorization header; "
                    "give only one of them")
            headers = {**(headers or {}), "Authorization": basic_auth(*credentials)}
        object.__setattr__(self, "url", url)
        object.__setattr__(self, "headers", headers)
        if self.max_inflight is not None and self.max_inflight < 1:
            raise ConfigurationError(f"node {self.name}: max_inflight must be >= 1")
        if self.weight is not None and not self.weight > 0:
            raise ConfigurationError(f"node {self.name}: weight must be > 0")

    @property
    def name(self) -> str:
        """The URL (credentials were moved to a header): safe for logs, errors and pages."""
        return self.url

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
            items = (f"{k!r}: {v!r}" if isinstance(v, FromEnv) else f"{k!r}: ***"
                     for k, v in self.headers.items())
            shown += f", headers={{{', '.join(items)}}}"
        if self.max_inflight is not None:
            shown += f", max_inflight={self.max_inflight}"
        if self.weight is not None:
            shown += f", weight={self.weight}"
        return shown + ")"

    # Header values travel sealed (see _secrets), and are registered for redaction in
    # every process that unpickles a Node: the Dask workers.
    def __getstate__(self) -> dict:
        return {**self.__dict__, "headers": seal_headers(self.headers)}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update({**state, "headers": unseal_headers(state.get("headers"))})


def split_credentials(url: object) -> tuple[str, tuple[str, str | None] | None]:
    """``(url without credentials, (user, password) or None)``.

    Per RFC 3986 the host ends at the first ``/``, ``?`` or ``#``, and a password holding
    one of them must be percent-encoded. A URL with an ``@`` after that point is almost
    certainly such a password typed raw (``http://user:12/34@host`` would otherwise mean
    host ``user``): it is refused, and the message never shows the password.
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError(f"a node URL must be a non-empty string, not {url!r}")
    text = url.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    ends = [i for i in (rest.find(c) for c in "/?#") if i >= 0]
    authority, tail = rest[:min(ends, default=len(rest))], rest[min(ends, default=len(rest)):]
    if "@" in tail:
        raise ConfigurationError(
            f"node URL {redact_url(text)!r} has an '@' after the host: if it is part of a "
            "password, percent-encode the password (urllib.parse.quote(password, safe='')), "
            "or pass the credentials as headers")
    if "@" not in authority:
        return text, None
    userinfo, host = authority.rsplit("@", 1)
    user, colon, password = userinfo.partition(":")
    return f"{scheme}{sep}{host}{tail}", (unquote(user), unquote(password) if colon else None)


def normalize_url(url: str) -> str:
    """Canonical base URL of a server: scheme and host lowercased, no trailing slash.

    A bare ``host:port`` gets ``http://``. An endpoint path at the end
    (``/api/embed``, ``/api/embeddings``, ``/v1/embeddings``, ``/v1``) is dropped, whatever
    the ``api``: the backend adds its own, and the probe tells which server answers.
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
    for suffix in ENDPOINT_SUFFIXES:
        if path.endswith(suffix):
            path = path[: -len(suffix)].rstrip("/")
            break
    return urlunsplit((parts.scheme, parts.netloc.lower(), path, "", ""))


def resolve_nodes(nodes: Iterable[str | Node] | str | Node | None) -> tuple[Node, ...]:
    """Turn what a user passed (or the environment) into distinct ``Node`` objects.

    With ``None``: ``SOLLOL_NODES`` (URLs separated by commas and/or whitespace), else
    ``OLLAMA_HOST``, else ``http://127.0.0.1:11434``. A URL string is an Ollama node
    unless written ``openai+http://host:8080`` or as its ``/v1`` base URL
    (``http://host:8080/v1``): then it is an OpenAI-compatible one. Later duplicates of
    a server are dropped.
    """
    if nodes is None:
        env = os.environ.get("SOLLOL_NODES") or os.environ.get("OLLAMA_HOST") or DEFAULT_NODE
        nodes = [part for part in re.split(r"[\s,]+", env) if part]
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
    api = "ollama"
    if text.lower().startswith(OPENAI_PREFIX):
        api, text = "openai", text[len(OPENAI_PREFIX):]
    if text.startswith(":"):
        text = "127.0.0.1" + text
    if "://" not in text and ":" not in text:
        text += ":11434"
    # Ollama's native API is under /api; a base URL ending in /v1 is the OpenAI route
    # (what OpenAI clients are configured with), so it can only mean an OpenAI node.
    path = urlsplit(text if "://" in text else "http://" + text).path.rstrip("/")
    if path.endswith(("/v1", "/v1/embeddings")):
        api = "openai"
    return Node(text, api=api)
