"""HTTP handlers of the simulated node: one class per route, Ollama's bodies and errors."""

from __future__ import annotations

import asyncio
import dataclasses

import orjson
import tornado.iostream
import tornado.web

from ._wire import VERSION, b64_vectors, dumps, expires_at, now_ns


class _Base(tornado.web.RequestHandler):
    node: SimNode  # noqa: F821 (annotation only: the server imports the handlers)
    openai_errors = False

    def initialize(self, node: SimNode) -> None:  # noqa: F821
        self.node = node

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")

    def reply(self, body: object, status: int = 200) -> None:
        self.set_status(status)
        self.finish(dumps(body))

    def error(self, status: int, message: str, kind: str = "api_error") -> None:
        if self.openai_errors:
            body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
        else:
            body = {"error": message}
        self.reply(body, status)

    def body_json(self) -> dict | None:
        try:
            data = orjson.loads(self.request.body or b"{}")
        except orjson.JSONDecodeError:
            self.error(400, "invalid character in request body: unexpected end of JSON input")
            return None
        if not isinstance(data, dict):
            self.error(400, "json: cannot unmarshal array into Go value")
            return None
        return data


class Root(_Base):
    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")

    def get(self) -> None:
        self.finish("Ollama is running")

    def head(self) -> None:
        self.finish()


class Version(_Base):
    def get(self) -> None:
        self.reply({"version": VERSION})


class SimCounters(_Base):
    """``GET /sim/counters``: the sim's own counters (not an Ollama route), for benchmarks
    and tests that run the node in another process."""

    def get(self) -> None:
        self.reply(dataclasses.asdict(self.node.counters))


class Health(_Base):
    def get(self) -> None:
        self.reply({"status": "ok"})


class Tags(_Base):
    def get(self) -> None:
        n = self.node
        names = [n.model if ":" in n.model else n.model + ":latest", *n.extra_models]
        self.reply({"models": [
            {"name": name, "model": name, "modified_at": n.modified_at,
             "size": 274302450, "digest": n.digest,
             "details": {"format": "gguf", "family": "nomic-bert", "families": ["nomic-bert"],
                         "parameter_size": "137M", "quantization_level": "F16"}}
            for name in names
        ]})


class Ps(_Base):
    def get(self) -> None:
        n = self.node
        loaded = n._loaded_until is not None
        models = [] if not loaded else [{
            "name": n.model, "model": n.model, "size": 300_000_000, "digest": n.digest,
            "size_vram": 300_000_000 if n.profile.name != "cpu" else 0,
            "expires_at": expires_at(), "context_length": n.profile.context_length,
        }]
        self.reply({"models": models})


class Show(_Base):
    def post(self) -> None:
        data = self.body_json()
        if data is None:
            return
        name = data.get("model") or data.get("name") or ""
        if not self.node.serves(name):
            return self.error(404, f"model '{name}' not found")
        self.reply({
            "modelfile": "", "parameters": "", "template": "",
            "details": {"format": "gguf", "family": "nomic-bert"},
            "model_info": {"general.architecture": "nomic-bert",
                           "nomic-bert.embedding_length": self.node.dimension,
                           "nomic-bert.context_length": self.node.profile.context_length},
            "capabilities": ["embedding"],
        })


class _Embed(_Base):
    """Shared path of the embed routes: faults, model check, time model, counters."""

    async def embed(self, data: dict, texts: list[str], truncate: bool = True):
        counters = self.node.counters
        counters.requests += 1
        counters.arrived()
        number = counters.requests
        counters.inflight += 1
        counters.max_inflight = max(counters.max_inflight, counters.inflight)
        # Like Ollama (request context) and llama-server, stop when the client hangs up:
        # the request is no longer in flight (the slot time it took stays spent).
        self._work = asyncio.ensure_future(self._embed(data, texts, truncate, number))
        try:
            return await self._work
        except asyncio.CancelledError:
            if not self._client_gone:
                raise
        finally:
            counters.inflight -= 1

    _client_gone = False
    _work: asyncio.Future | None = None

    def on_connection_close(self) -> None:
        if self.node.faults.finish_after_hangup:
            return
        self._client_gone = True
        if self._work is not None and not self._work.done():
            self._work.cancel()

    async def _embed(self, data, texts, truncate, number):
        node, faults = self.node, self.node.faults
        if faults.die_after and number > faults.die_after:
            asyncio.ensure_future(node._close())  # noqa: SLF001 - the node dies
            return self._drop()
        if faults.hang_after and number > faults.hang_after:
            await node._hang_event.wait()
            return self._drop()
        if faults.reset_every and number % faults.reset_every == 0:
            return self._drop()
        if faults.burst_status and faults.burst_after < number <= faults.burst_after + faults.burst_count:
            msg = {503: "server busy, please try again.  maximum pending requests exceeded",
                   429: "too many requests: the queue is full"}.get(
                       faults.burst_status, "llama runner process has terminated")
            if faults.retry_after and faults.burst_status in (429, 503):
                self.set_header("Retry-After", f"{faults.retry_after:g}")
            return self._fail(faults.burst_status, msg)
        if faults.max_inputs and len(texts) > faults.max_inputs:
            return self._fail(422, f"batch size {len(texts)} > maximum allowed batch size "
                                   f"{faults.max_inputs}")
        model = data.get("model") or ""
        if not node.serves(model):
            return self._fail(404, f'model "{model}" not found, try pulling it first')
        if not truncate and node.too_long(texts):
            return self._fail(400, "the input length exceeds the context length")
        started = now_ns()
        if not await node.occupy_slot(texts):
            return self._fail(503, "server busy, please try again.  maximum pending requests exceeded")
        if faults.eof_every and number % faults.eof_every == 0:
            return self._fail(400, 'do embedding request: Post "http://127.0.0.1:39201/embedding": EOF')
        if faults.poison and any(faults.poison in t for t in texts):
            return self._fail(400, "embedding contains NaN or Inf values")
        if faults.nan_every and number % faults.nan_every == 0:
            return self._fail(400, "embedding contains NaN or Inf values")
        if faults.malformed_every and number % faults.malformed_every == 0:
            self.set_status(200)
            return self.finish(b'{"model": "' + model.encode() + b'", "embeddings": [[0.1, oops')
        vectors = faults.distort(node.vectors(texts), number)
        self._bad_index = faults.hits(faults.bad_index_every, number)
        node.counters.texts += len(texts)
        node.counters.tokens += sum(len(t) // 4 + 1 for t in texts)  # as the answer says
        if faults.truncated_every and number % faults.truncated_every == 0:
            body = self.render_body(data, texts, vectors, started)
            self.set_status(200)
            return self.finish(body[: len(body) // 2])
        self.set_status(200)
        self.finish(self.render_body(data, texts, vectors, started))

    _bad_index = False

    def render_body(self, data, texts, vectors, started) -> bytes:
        raise NotImplementedError

    def _fail(self, status: int, message: str) -> None:
        self.node.counters.errors += 1
        self.error(status, message)

    def _drop(self) -> None:
        self.node.counters.errors += 1
        # Close the TCP connection without an answer, as a crashed process would.
        if self.request.connection and self.request.connection.stream:
            self.request.connection.stream.close()


class Embed(_Embed):
    async def post(self) -> None:
        data = self.body_json()
        if data is None:
            return
        raw = data.get("input", [])
        if isinstance(raw, str):
            raw = [raw] if raw else []
        if not isinstance(raw, list) or not all(isinstance(t, str) for t in raw):
            return self.error(400, "invalid input type")
        await self.embed(data, raw, truncate=data.get("truncate", True) is not False)

    def render_body(self, data, texts, vectors, started) -> bytes:
        return dumps({"model": data.get("model"), "embeddings": vectors,
                      "total_duration": now_ns() - started, "load_duration": 0,
                      "prompt_eval_count": sum(len(t) // 4 + 1 for t in texts)})


class LegacyEmbeddings(_Embed):
    """``/api/embeddings``: one prompt, vector not normalized (scaled by 10)."""

    async def post(self) -> None:
        data = self.body_json()
        if data is None:
            return
        prompt = data.get("prompt", "")
        if not isinstance(prompt, str):
            return self.error(400, "invalid input type")
        await self.embed(data, [prompt])

    def render_body(self, data, texts, vectors, started) -> bytes:
        return dumps({"embedding": vectors[0] * 10.0})


class OpenAIEmbeddings(_Embed):
    openai_errors = True

    async def post(self) -> None:
        data = self.body_json()
        if data is None:
            return
        raw = data.get("input")
        if isinstance(raw, str):
            raw = [raw]
        if not isinstance(raw, list) or not raw or not all(isinstance(t, str) for t in raw):
            return self.error(400, "invalid input: 'input' must be a string or a list of strings",
                              "invalid_request_error")
        if data.get("encoding_format", "float") not in ("float", "base64"):
            return self.error(400, "encoding_format must be float or base64", "invalid_request_error")
        await self.embed(data, raw)

    def render_body(self, data, texts, vectors, started) -> bytes:
        rows = b64_vectors(vectors) if data.get("encoding_format") == "base64" else vectors
        items = [{"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(rows)]
        if self._bad_index:  # answered out of order, every row numbered 0
            items = [dict(item, index=0) for item in reversed(items)]
        return dumps({"object": "list", "model": data.get("model"), "data": items,
                      "usage": {"prompt_tokens": sum(len(t) // 4 + 1 for t in texts),
                                "total_tokens": sum(len(t) // 4 + 1 for t in texts)}})


class Models(_Base):
    """``GET /v1/models`` as llama-server answers it: the model and its ``meta.n_embd``."""

    def get(self) -> None:
        n = self.node
        self.reply({"object": "list", "data": [{
            "id": n.model, "object": "model", "created": 0, "owned_by": "sim",
            "meta": {"n_embd": n.dimension, "n_ctx_train": n.profile.context_length}}]})


ROUTES = [
    (r"/", Root), (r"/api/version", Version), (r"/health", Health), (r"/api/tags", Tags),
    (r"/api/ps", Ps), (r"/api/show", Show), (r"/api/embed", Embed),
    (r"/api/embeddings", LegacyEmbeddings), (r"/v1/embeddings", OpenAIEmbeddings),
    (r"/v1/models", Models),
    (r"/sim/counters", SimCounters),
]
