"""One connection pool per node, and the one place where the HTTP library's exceptions
become ``NodeError``.

Every node, ``http://`` (Ollama, llama-server, TEI on a LAN) or ``https://`` (behind a TLS
proxy), is reached with HTTP/1.1 keep-alive through aiohttp: its C HTTP/1.1 parser costs
about a quarter of httpx's pure-Python CPU per request (benchmarks/README.md, scenario 5),
and with fast nodes the client's own CPU is what limits a worker. HTTP/2 is not offered to
TLS proxies: measured through nginx at the router's concurrency it was 1.55-1.88x slower
than HTTP/1.1 keep-alive, and never faster with a real model behind the proxy
(docs/ollama-questions.md, question 1). The servers themselves speak only HTTP/1.1.

A pool is created lazily on the router's event loop (aiohttp sessions belong to a loop)
and only ever used there.

Bodies are read in chunks and bounded: at most ``max_bytes`` (a larger answer stops the
read and closes the connection), only the first 64 KiB of an error answer, and once the
headers are in, the body must keep coming at a sane pace (a node that drips bytes and
never finishes fails in seconds, not at the request's whole timeout).
"""

from __future__ import annotations

import asyncio
import socket
import ssl

import aiohttp
import yarl

from .._exceptions import ConfigurationError, NodeError
from ..policy._limits import ERROR_BODY_BYTES, size_text
from .._outcome import Failure
from .._secrets import FromEnv, resolve_headers
from ..backends import Reply

_CONNECT_SECONDS = 5.0  # a node that does not accept a connection in this time is down
_JSON = {"Content-Type": "application/json"}
# Once its headers are in, an answer's body gets this long, plus 1 s per 64 KiB received:
# servers send an embedding answer at once (it is computed before the headers go out),
# and 64 KiB/s is far below any link a fleet runs on.
_BODY_GRACE = 5.0
_MIN_BODY_RATE = 64 * 1024


class NodePool:
    """aiohttp keep-alive connections to one node: ``request(...) -> Reply``.

    ``verify`` applies to ``https://`` nodes: True (the system's CA store), False (no
    verification) or an ``ssl.SSLContext`` trusting a CA bundle (see :func:`tls_verify`).
    """

    _session: aiohttp.ClientSession | None = None

    def __init__(self, name: str, url: str, headers: dict[str, str] | None, connections: int,
                 verify: bool | ssl.SSLContext = True) -> None:
        self.name = name
        self.url = url.rstrip("/")
        self.headers = dict(headers or {})
        self.connections = connections
        self.verify = verify
        self._urls: dict[str, yarl.URL] = {}  # parsed once per path

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self.headers,
                connector=aiohttp.TCPConnector(limit=self.connections, ssl=self.verify),
                trust_env=False,  # no proxies or .netrc from the environment
            )
        return self._session

    async def request(self, method: str, path: str, body: bytes | None,
                      timeout: float, max_bytes: int) -> Reply:
        session = self._open()
        url = self._urls.get(path)
        if url is None:  # yarl parsing is a visible per-request cost
            url = self._urls[path] = yarl.URL(self.url + path)
        try:
            async with session.request(
                method, url, data=body, headers=_JSON if body is not None else None,
                timeout=aiohttp.ClientTimeout(total=timeout,
                                              sock_connect=min(timeout, _CONNECT_SECONDS)),
                allow_redirects=False,  # never re-send a body (or headers) elsewhere
            ) as response:
                content = await self._read_body(response.content.readany,
                                                response.content_length, response.status,
                                                max_bytes, response.close)
                return Reply(response.status, content, path,
                             response.headers.get("Retry-After"),
                             response.headers.get("Location"))
        except asyncio.TimeoutError:  # aiohttp's ServerTimeoutError is one too
            raise self._timeout(timeout) from None
        except aiohttp.ClientSSLError as exc:  # before ClientConnectorError: it is one too
            raise self._tls_failed(_os_reason(exc)) from None
        except aiohttp.ClientConnectorError as exc:
            raise self._refused(_os_reason(exc)) from None
        except aiohttp.ClientError as exc:
            raise self._broken(_aiohttp_reason(exc)) from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _read_body(self, next_chunk, declared: int | None, status: int, max_bytes: int,
                         close=lambda: None) -> bytes:
        """The body, chunk by chunk: at most ``max_bytes`` of a 2xx answer (else an error),
        the first ``ERROR_BODY_BYTES`` of any other, arriving at a sane pace. ``close``
        drops the connection when the read stops early (nothing more is read from it)."""
        ok = 200 <= status < 300
        cap = max_bytes if ok else min(max_bytes, ERROR_BODY_BYTES)
        if ok and declared is not None and declared > cap:
            close()
            raise self._too_large(cap, declared)
        start = asyncio.get_running_loop().time()
        chunks: list[bytes] = []
        size = 0
        pace = asyncio.timeout_at(start + _BODY_GRACE)
        try:
            async with pace:
                while chunk := await next_chunk():
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > cap:
                        close()
                        if ok:
                            raise self._too_large(cap)
                        return b"".join(chunks)[:cap]  # enough of an error page to quote
                    pace.reschedule(start + _BODY_GRACE + size / _MIN_BODY_RATE)
        except TimeoutError:
            if not pace.expired():
                raise  # the request's own timeout
            close()
            raise self._dripping(size, asyncio.get_running_loop().time() - start) from None
        return b"".join(chunks)

    # -- the errors every pool raises ------------------------------------------------

    def _timeout(self, timeout: float) -> NodeError:
        return NodeError(f"{self.name} did not answer within {timeout:.1f} s", node=self.name,
                         failure=Failure.TIMEOUT, hard=True)

    def _too_large(self, limit: int, declared: int | None = None) -> NodeError:
        said = f" (it announced {declared:,} bytes)" if declared is not None else ""
        return NodeError(
            f"{self.name} sent more than {size_text(limit)} in one answer{said}: read stopped "
            "and connection closed (for embedding answers the limit is the "
            "max_response_bytes setting)", node=self.name, failure=Failure.BAD_RESPONSE,
            hard=True)

    def _dripping(self, received: int, seconds: float) -> NodeError:
        return NodeError(
            f"{self.name} sent only {received:,} bytes of an answer's body in {seconds:.1f} s "
            "after its headers (a server sends an answer at once): connection closed",
            node=self.name, failure=Failure.BAD_RESPONSE, hard=True)

    def _refused(self, reason: str) -> NodeError:
        return NodeError(f"cannot connect to {self.name} ({reason}): is it running?",
                         node=self.name, failure=Failure.TRANSIENT, hard=True)

    def _tls_failed(self, reason: str) -> NodeError:
        return NodeError(f"TLS with {self.name} failed ({reason}): for a private CA pass "
                         "verify='/path/ca.pem' (--ca-bundle)", node=self.name,
                         failure=Failure.TRANSIENT, hard=True)

    def _broken(self, reason: str) -> NodeError:
        return NodeError(f"connection to {self.name} failed: {reason}", node=self.name,
                         failure=Failure.TRANSIENT)


def open_pool(name: str, url: str, headers: dict[str, str | FromEnv] | None, connections: int,
              verify: bool | str) -> NodePool:
    """A pool for one node. Header values from the environment and the CA bundle are read
    here, in the process that sends the requests (a Dask worker): if either is missing
    the node cannot be used from this process, and the error says why instead of the
    node looking down."""
    https = url.startswith("https://")
    try:
        resolved = resolve_headers(headers, name)
        if https:
            verify = tls_verify(verify)
    except ConfigurationError as err:
        raise NodeError(str(err), node=name, retryable=False,
                        failure=Failure.NODE_FATAL) from None
    return NodePool(name, url, resolved, connections, verify if https else True)


def tls_verify(verify: bool | str | ssl.SSLContext) -> bool | ssl.SSLContext:
    """aiohttp's ``ssl``: True/False, or an SSL context trusting a CA bundle file."""
    if isinstance(verify, str):
        try:
            return ssl.create_default_context(cafile=verify)
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise ConfigurationError(
                f"CA bundle {verify!r} cannot be read on {socket.gethostname()} ({reason}): "
                "it must exist on every machine that runs Dask workers") from None
    return verify


# Reasons name the exception kind and the OS's words, never a URL or a header.

def _os_reason(exc: aiohttp.ClientConnectorError) -> str:
    error = getattr(exc, "certificate_error", None) or exc.os_error
    return f"{type(exc).__name__}: {getattr(error, 'strerror', None) or error}"


def _aiohttp_reason(exc: aiohttp.ClientError) -> str:
    text = str(exc).split(", url=")[0]  # ClientResponseError appends the URL
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
