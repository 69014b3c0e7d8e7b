"""A hostile node for tests: a real HTTP server on 127.0.0.1 that forwards every request
to a simulated node, except those a test hands to a misbehaviour.

    node = HostileNode(sim.url).start()
    node.misbehave(lambda request, body: request.path == "/api/tags", stream(36 * MIB))

Misbehaviours a sim node has no business simulating live here: a proxy's HTML page, a
body that never ends or drips a byte at a time, megabytes of error text, redirects.
Bodies are streamed from one reused chunk, so a 500 MiB answer costs the server nothing,
and the bytes written before the client hung up are counted (``sent``).
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

MIB = 1024 * 1024
# (request, request body) -> answer; the body is read already so handlers can look at it
Misbehaviour = Callable[[web.Request, bytes], Awaitable[web.StreamResponse]]


class HostileNode:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.rules: list[tuple[Callable[[web.Request, bytes], bool], Misbehaviour]] = []
        self.hits: Counter = Counter()  # (method, path) of every request seen
        self.misbehaved: Counter = Counter()  # (method, path) answered by a misbehaviour
        self.sent: Counter = Counter()  # body bytes written by streaming misbehaviours, per path
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HostileNode:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def misbehave(self, when: Callable[[web.Request, bytes], bool], how: Misbehaviour) -> None:
        """Answer requests for which ``when(request, body)`` holds with ``how``."""
        self.rules.append((when, how))

    def behave(self) -> None:
        """Forward everything from now on."""
        self.rules.clear()

    async def _serve(self) -> None:
        app = web.Application(client_max_size=64 * MIB)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        self._session = aiohttp.ClientSession()

    async def _close(self) -> None:
        await self._session.close()
        await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.hits[(request.method, request.path)] += 1
        for when, how in list(self.rules):
            if when(request, body):
                self.misbehaved[(request.method, request.path)] += 1
                return await how(request, body)
        async with self._session.request(request.method, self.upstream + request.path_qs,
                                         data=body or None, headers=_forwarded(request)) as up:
            return web.Response(status=up.status, body=await up.read(),
                                content_type=up.content_type)

    # -- misbehaviours ---------------------------------------------------------------

    def stream(self, total: int, *, prefix: bytes = b'{"embeddings": [[', status: int = 200,
               content_type: str = "application/json") -> Misbehaviour:
        """A body of ``total`` bytes, sent in 1 MiB chunks without a Content-Length."""
        chunk = b"0.1, " * (MIB // 5)

        async def answer(request: web.Request, body: bytes) -> web.StreamResponse:
            response = web.StreamResponse(status=status, headers={"Content-Type": content_type})
            await response.prepare(request)
            try:
                await self._write(response, request.path, prefix)
                while self.sent[request.path] < total:
                    await self._write(response, request.path, chunk)
                await response.write_eof()
            except ConnectionError:
                pass  # the client hung up: what it had is counted in ``sent``
            return response

        return answer

    def drip(self, every: float = 0.2) -> Misbehaviour:
        """Headers at once, then one byte of body every ``every`` seconds, never done."""

        async def answer(request: web.Request, body: bytes) -> web.StreamResponse:
            response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
            await response.prepare(request)
            try:
                await self._write(response, request.path, b"{")
                while True:
                    await asyncio.sleep(every)  # the misbehaviour itself, not a test wait
                    await self._write(response, request.path, b" ")
            except ConnectionError:
                pass
            return response

        return answer

    async def _write(self, response: web.StreamResponse, path: str, data: bytes) -> None:
        await response.write(data)  # waits while the client is not reading; raises once gone
        self.sent[path] += len(data)


def answer(status: int, body: bytes | str, content_type: str = "application/json",
           headers: dict | None = None) -> Misbehaviour:
    """The same fixed answer to every request it gets."""
    data = body.encode() if isinstance(body, str) else body

    async def reply(request: web.Request, _: bytes) -> web.Response:
        return web.Response(status=status, body=data, content_type=content_type,
                            headers=headers)

    return reply


HTML_PAGE = answer(200, "<html><body><h1>502 Bad Gateway</h1>restarting, back soon</body></html>",
                   "text/html")


def always(request: web.Request, body: bytes) -> bool:
    return True


def embedding_texts(request: web.Request, body: bytes) -> bool:
    """An embedding request with texts in it (not a warm-up's empty input)."""
    return request.method == "POST" and request.path.endswith("embed") and b'"input":[]' not in body


def _forwarded(request: web.Request) -> dict:
    return {k: v for k, v in request.headers.items()
            if k.lower() in ("content-type", "authorization")}
