"""A simulated Ollama node: a real HTTP server speaking Ollama's protocol (and /v1).

Routes: ``GET/HEAD /``, ``/api/version``, ``/api/tags``, ``/api/ps``, ``POST /api/show``,
``/api/embed``, ``/api/embeddings`` (legacy), ``/v1/embeddings`` (float and base64),
``GET /health``. Error bodies, strings and status codes follow Ollama's.

Use it in-process (``SimNode(...).start()`` serves on a thread, on a free port) or as a
process: ``sollol-dask sim --port 11434 --profile gpu``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import threading
import time

import numpy as np
import tornado.httpserver
import tornado.netutil
import tornado.web

from ._handlers import ROUTES
from ._profiles import PROFILES, SimProfile
from ._vectors import count_tokens, sim_digest, sim_vectors, truncate_text



@dataclasses.dataclass
class Faults:
    """What the node gets wrong, and when. Change fields at any time, even mid-run.

    ``*_every=N`` fails every Nth embed request (counting all of them); ``burst_status``
    answers ``burst_count`` requests with that status starting after ``burst_after``
    requests; ``die_after``/``hang_after`` make the node stop (connections refused) or stop
    answering after N requests; ``slowdown`` multiplies model time; ``max_inputs`` refuses
    requests with more inputs with a 422, as TEI does above its ``--max-client-batch-size``.
    ``retry_after`` (seconds) is sent as a Retry-After header with a 429 or 503 burst, as
    TEI and Infinity do when their queue is full.

    Wrong vectors in a 200 answer, every Nth request: ``zero_vectors_every`` (all zeros,
    a GPU kernel gone wrong), ``long_vectors_every`` (``long_factor`` times the dimension,
    as a server pooling per token sends), ``unnormalized_every`` (scaled by 10),
    ``missing_vector_every`` (one vector fewer than texts), ``bad_index_every`` (OpenAI
    route: rows in reverse order, every ``index`` 0).

    ``poison``: a request with a text containing this string is answered with Ollama's
    400 "embedding contains NaN or Inf values", as some models do for some inputs on
    every node: one row's own fault, while the rows around it embed.

    ``finish_after_hangup``: a request whose client hung up still runs to its end (and
    stays in flight in the counters until then).
    """

    eof_every: int = 0
    nan_every: int = 0
    malformed_every: int = 0
    truncated_every: int = 0
    reset_every: int = 0
    burst_status: int = 0
    burst_after: int = 0
    burst_count: int = 0
    die_after: int = 0
    hang_after: int = 0
    max_inputs: int = 0
    slowdown: float = 1.0
    retry_after: float = 0.0
    zero_vectors_every: int = 0
    long_vectors_every: int = 0
    long_factor: int = 37
    unnormalized_every: int = 0
    missing_vector_every: int = 0
    bad_index_every: int = 0
    poison: str = ""
    # Finish a request whose client hung up, as Ollama's single slot finishes the batch it
    # is computing (by default the sim stops, like llama-server).
    finish_after_hangup: bool = False

    def hits(self, every: int, number: int) -> bool:
        return bool(every) and number % every == 0

    def distort(self, vectors: np.ndarray, number: int) -> np.ndarray:
        """The vectors of request ``number`` as this node gets them wrong, if it does."""
        if not len(vectors):
            return vectors
        if self.hits(self.zero_vectors_every, number):
            vectors = np.zeros_like(vectors)
        if self.hits(self.long_vectors_every, number):
            vectors = np.tile(vectors, (1, self.long_factor))
        if self.hits(self.unnormalized_every, number):
            vectors = vectors * np.float32(10.0)
        if self.hits(self.missing_vector_every, number):
            vectors = vectors[:-1]
        return vectors


@dataclasses.dataclass
class Counters:
    requests: int = 0  # embed requests received (any embed route)
    texts: int = 0  # texts embedded successfully
    tokens: int = 0  # of those texts, as the answers report them (len // 4 + 1 each)
    errors: int = 0  # embed requests answered with an error
    inflight: int = 0
    max_inflight: int = 0
    # Slot time spent embedding (summed over slots) and the wall-clock span (epoch seconds)
    # from the first embedding to the last: busy / (slots x span) is how busy the node was.
    busy_seconds: float = 0.0
    first_busy: float | None = None
    last_busy: float | None = None
    # time.monotonic() at which each embed request arrived (the last 10,000)
    arrivals: list[float] = dataclasses.field(default_factory=list)

    def arrived(self) -> None:
        self.arrivals.append(time.monotonic())
        if len(self.arrivals) > 10_000:
            del self.arrivals[:5_000]


class SimNode:
    """One simulated node. ``start()`` serves on a background thread; ``url`` tells where.

    >>> node = SimNode("gpu", load_seconds=0).start()
    >>> node.url
    'http://127.0.0.1:54321'
    >>> node.stop()
    """

    def __init__(self, profile: str | SimProfile = "gpu", *, model: str = "nomic-embed-text",
                 dimension: int = 768, host: str = "127.0.0.1", port: int = 0,
                 digest_variant: str = "", faults: Faults | None = None,
                 extra_models: tuple[str, ...] = (), max_queue: int = 512,
                 ssl_context=None, also_on: tuple[str, ...] = (),
                 **profile_changes) -> None:
        base = PROFILES[profile] if isinstance(profile, str) else profile
        self.profile = base.replace(**profile_changes) if profile_changes else base
        self.model = model
        self.dimension = dimension
        self.host = host
        self.port = port
        self.digest = sim_digest(model, digest_variant)
        self.extra_models = extra_models
        self.faults = faults or Faults()
        self.ssl_context = ssl_context  # serve https:// (tests of TLS verification)
        # More addresses this one server listens on, at the same port (as a server bound
        # to 0.0.0.0 is reached on each of the host's addresses).
        self.also_on = tuple(also_on)
        # When its models were pulled, as /api/tags tells: one machine's own (Ollama
        # reports its manifest files' times), so two servers' answers differ.
        self.modified_at = _pulled_at()
        self.counters = Counters()
        self._slots = [0.0] * self.profile.slots  # loop time each slot is busy until
        self._loaded_until: float | None = None  # None: model not loaded yet
        self._loading_queue = 0  # requests waiting while the model loads
        self.max_queue = max_queue  # Ollama's OLLAMA_MAX_QUEUE: 503 beyond it while loading
        self._hang_event: asyncio.Event | None = None  # set when the node stops
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: tornado.httpserver.HTTPServer | None = None
        self._started = threading.Event()
        self._dead = False

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://{self.host}:{self.port}"

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> SimNode:
        """Serve on a background thread; returns once the port accepts connections."""
        self._thread = threading.Thread(target=self._run_thread, name=f"sim-{self.profile.name}",
                                        daemon=True)
        self._thread.start()
        self._started.wait(10)
        return self

    def _run_thread(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self.serve())
        self._started.set()
        self._loop.run_forever()

    async def serve(self) -> None:
        """Start listening on the running loop (for an asyncio program or the CLI)."""
        self._loop = asyncio.get_running_loop()
        self._hang_event = asyncio.Event()
        app = tornado.web.Application(_routes(self))
        sockets = tornado.netutil.bind_sockets(self.port, self.host, family=socket.AF_INET)
        self.port = sockets[0].getsockname()[1]
        for host in self.also_on:
            sockets += tornado.netutil.bind_sockets(self.port, host, family=socket.AF_INET)
        self._server = tornado.httpserver.HTTPServer(app, idle_connection_timeout=60,
                                                     ssl_options=self.ssl_context)
        self._server.add_sockets(sockets)
        self._dead = False

    def kill(self) -> None:
        """Stop answering as a crashed process would: close the port and all connections."""
        self._call(self._close)

    def revive(self, *, cold: bool = True) -> None:
        """Come back on the same port (with the model unloaded unless ``cold=False``)."""
        if cold:
            self._loaded_until = None
        self._call(self.serve)

    def stop(self) -> None:
        """Shut down for good (idempotent)."""
        if self._loop is None or self._thread is None or not self._thread.is_alive():
            return
        self._call(self._close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _call(self, fn) -> None:
        if self._loop is None:
            raise RuntimeError("sim node not started")
        asyncio.run_coroutine_threadsafe(fn(), self._loop).result(10)

    async def _close(self) -> None:
        self._dead = True
        if self._server is not None:
            self._server.stop()
            self._hang_event.set()
            await self._server.close_all_connections()
            self._server = None

    def __enter__(self) -> SimNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- time model ------------------------------------------------------------------

    async def occupy_slot(self, texts: list[str]) -> bool:
        """Wait as long as a real node would take to embed ``texts``. False: the queue
        overflowed while the model was loading (the caller answers 503)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._loaded_until is None:
            self._loaded_until = now + self.profile.load_seconds
        ready = self._loaded_until
        if ready > now:
            if self._loading_queue >= self.max_queue:
                return False
            self._loading_queue += 1
            try:
                await asyncio.sleep(ready - now)
            finally:
                self._loading_queue -= 1
            now = loop.time()
        slot = min(range(len(self._slots)), key=self._slots.__getitem__)
        start = max(now, self._slots[slot], ready)
        finish = start + self.profile.service_seconds(texts, self.faults.slowdown)
        self._slots[slot] = finish
        if texts and finish > start:  # an empty request (a model load) is not embedding
            epoch = time.time() - now  # loop time -> wall clock
            c = self.counters
            c.busy_seconds += finish - start
            c.first_busy = start + epoch if c.first_busy is None else c.first_busy
            c.last_busy = max(c.last_busy or 0.0, finish + epoch)
        if finish > now:
            await asyncio.sleep(finish - now)
        return True

    def loading(self) -> bool:
        return self._loaded_until is None or self._loaded_until > asyncio.get_running_loop().time()

    def vectors(self, texts: list[str]) -> np.ndarray:
        return sim_vectors(self.model, [truncate_text(t, self.profile.context_length)
                                        for t in texts], self.dimension)

    def too_long(self, texts: list[str]) -> bool:
        return any(count_tokens(t) > self.profile.context_length for t in texts)

    def serves(self, name: str) -> bool:
        names = {self.model, self.model + ":latest", *self.extra_models}
        return name in names


def _routes(node: SimNode) -> list:
    return [(path, handler, {"node": node}) for path, handler in ROUTES]


_pulls = iter(range(1, 1 << 62))


def _pulled_at() -> str:
    """A distinct pull time per sim (nanoseconds, as Ollama's RFC 3339 times carry)."""
    now = time.time_ns() + next(_pulls)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now // 10**9)) + \
        f".{now % 10**9:09d}Z"
