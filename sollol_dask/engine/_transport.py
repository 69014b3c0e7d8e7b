"""One connection pool per node, and the one place where HTTP libraries' exceptions
become ``NodeError``.

``http://`` nodes (Ollama, llama-server, TEI on a LAN: HTTP/1.1) go through aiohttp: its
C HTTP/1.1 parser costs about a quarter of httpx's pure-Python CPU per request
(benchmarks/README.md, scenario 5), and with fast nodes the client's own CPU is what
limits a worker. ``https://`` nodes go through httpx, which can offer HTTP/2 to the TLS
proxies such nodes usually sit behind.

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
import httpx
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
    """``request(method, path, body, timeout) -> (status, body)`` on one node."""

    def __init__(self, name: str, url: str, headers: dict[str, str] | None, connections: int,
                 verify: bool | str) -> None:
        self.name = name
        self.url = url.rstrip("/")
        self.headers = dict(headers or {})
        self.connections = connections
        self.verify = verify

    async def request(self, method: str, path: str, body: bytes | None,
                      timeout: float, max_bytes: int) -> Reply:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError

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

    def _broken(self, reason: str) -> NodeError:
        return NodeError(f"connection to {self.name} failed: {reason}", node=self.name,
                         failure=Failure.TRANSIENT)


class Http1Pool(NodePool):
    """aiohttp keep-alive connections to a plain ``http://`` node."""

    _session: aiohttp.ClientSession | None = None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._urls: dict[str, yarl.URL] = {}  # parsed once per path

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self.headers,
                connector=aiohttp.TCPConnector(limit=self.connections),
                trust_env=False,  # as httpx's trust_env=False: no proxies from the env
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
                allow_redirects=False,  # as httpx: never re-send a body (or headers) elsewhere
            ) as response:
                content = await self._read_body(response.content.readany,
                                                response.content_length, response.status,
                                                max_bytes, response.close)
                return Reply(response.status, content, path,
                             response.headers.get("Retry-After"),
                             response.headers.get("Location"))
        except asyncio.TimeoutError:  # aiohttp's ServerTimeoutError is one too
            raise self._timeout(timeout) from None
        except aiohttp.ClientConnectorError as exc:
            raise self._refused(_os_reason(exc)) from None
        except aiohttp.ClientError as exc:
            raise self._broken(_aiohttp_reason(exc)) from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


class Http2Pool(NodePool):
    """httpx connections to an ``https://`` node, HTTP/2 when the server offers it."""

    _client: httpx.AsyncClient | None = None

    def _open(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.url, headers=self.headers, http2=True,
                verify=tls_verify(self.verify),
                limits=httpx.Limits(max_connections=self.connections,
                                    max_keepalive_connections=self.connections),
                trust_env=False,
            )
        return self._client

    async def request(self, method: str, path: str, body: bytes | None,
                      timeout: float, max_bytes: int) -> Reply:
        client = self._open()
        try:
            # httpx's read timeout is per read; the request's timeout is for the whole
            # answer, as with aiohttp.
            async with asyncio.timeout(timeout), client.stream(
                    method, path, content=body, headers=_JSON if body is not None else None,
                    timeout=httpx.Timeout(timeout, connect=min(timeout, _CONNECT_SECONDS)),
            ) as response:
                declared = response.headers.get("Content-Length")
                chunks = response.aiter_bytes()
                # Leaving the stream early closes it (and an HTTP/1.1 connection with it).
                content = await self._read_body(
                    lambda: anext(chunks, b""), int(declared) if declared and declared.isdigit()
                    else None, response.status_code, max_bytes)
                return Reply(response.status_code, content, path,
                             response.headers.get("Retry-After"), response.headers.get("Location"))
        except (httpx.TimeoutException, TimeoutError):
            raise self._timeout(timeout) from None
        except httpx.ConnectError as exc:
            raise self._refused(_httpx_reason(exc)) from None
        except httpx.TransportError as exc:
            raise self._broken(_httpx_reason(exc)) from None

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


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
    kind = Http2Pool if https else Http1Pool
    return kind(name, url, resolved, connections, verify)


def tls_verify(verify: bool | str | ssl.SSLContext):
    """httpx's ``verify``: True/False, or an SSL context trusting a CA bundle file."""
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
    return f"{type(exc).__name__}: {exc.os_error.strerror or exc.os_error}"


def _aiohttp_reason(exc: aiohttp.ClientError) -> str:
    text = str(exc).split(", url=")[0]  # ClientResponseError appends the URL
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _httpx_reason(exc: Exception) -> str:
    text = str(exc).split(" for url ")[0]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
