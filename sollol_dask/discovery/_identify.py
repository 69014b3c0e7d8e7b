"""What answers at an address: Ollama, llama.cpp, TEI or another OpenAI-compatible
server, the models it has (with digests, loaded or not, VRAM) and its slots.

One short conversation per address, through the ``Get`` callable the scan hands in (its
one place for HTTP), so tests can record or replace it. The requested model's dimension
is read from the server's metadata (Ollama ``/api/show``, llama.cpp ``/v1/models``),
else from one short embedding (TEI and other OpenAI-compatible servers).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Awaitable, Callable
from typing import Any

from ..policy._identity import NodeInfo

# get(method, path, payload) -> (status, decoded JSON or None)
Get = Callable[[str, str, Any], Awaitable[tuple[int, Any]]]
KINDS = ("ollama", "llama.cpp", "tei", "openai")


@dataclasses.dataclass
class ModelEntry:
    name: str
    digest: str | None = None
    loaded: bool | None = None
    size_vram: int | None = None  # bytes of the loaded model in GPU memory
    modified_at: str | None = None


@dataclasses.dataclass
class Server:
    """One server found, however many addresses reach it (``addresses``)."""

    url: str
    kind: str
    version: str | None = None
    models: list[ModelEntry] = dataclasses.field(default_factory=list)
    slots: int | None = None  # requests it embeds at once (Ollama: 1 per embedding model)
    source: str = ""
    addresses: list[str] = dataclasses.field(default_factory=list)
    # The requested model as this server has it (None: no model asked, or not served).
    model: ModelEntry | None = None
    info: NodeInfo | None = None

    @property
    def api(self) -> str:
        """The wire format sollol_dask speaks to it."""
        return "ollama" if self.kind == "ollama" else "openai"

    def fingerprint(self) -> tuple:
        """What tells two servers apart when both are reached on this host's addresses:
        kind, version and every model with its digest and time of pull."""
        return (self.kind, self.version,
                tuple(sorted((m.name, m.digest, m.modified_at) for m in self.models)))


class NotEmbeddingServer(Exception):
    """The address answered HTTP, but as none of the servers sollol_dask can use."""


async def identify(get: Get, url: str, model: str | None, dimensions: int | None = None
                   ) -> Server:
    """Ask the server at ``url`` what it is; raises ``NotEmbeddingServer`` if none of
    ``KINDS`` (connection errors and timeouts propagate from ``get``)."""
    status, version = await get("GET", "/api/version", None)
    if status == 200 and isinstance(version, dict) and "version" in version:
        return await _ollama(get, url, str(version["version"]), model, dimensions)
    status, props = await get("GET", "/props", None)
    if status == 200 and isinstance(props, dict) and (
            "total_slots" in props or "default_generation_settings" in props):
        return await _llama_cpp(get, url, props, model, dimensions)
    status, info = await get("GET", "/info", None)
    if status == 200 and isinstance(info, dict) and "model_id" in info:
        server = Server(url, "tei", version=_text(info.get("version")), models=[ModelEntry(
            str(info["model_id"]), _text(info.get("model_sha")), loaded=True)])
        return await _with_probe(get, server, model, dimensions)
    status, listing = await get("GET", "/v1/models", None)
    if status == 200 and isinstance(listing, dict) and isinstance(listing.get("data"), list):
        server = Server(url, "openai", models=[
            ModelEntry(str(e.get("id")), loaded=True) for e in listing["data"]
            if isinstance(e, dict) and e.get("id")])
        return await _with_probe(get, server, model, dimensions)
    raise NotEmbeddingServer(f"{url} answers HTTP {status}, but not as Ollama, llama.cpp, "
                             "TEI or an OpenAI-compatible server")


async def _ollama(get: Get, url: str, version: str, model: str | None,
                  dimensions: int | None) -> Server:
    _, tags = await get("GET", "/api/tags", None)
    _, ps = await get("GET", "/api/ps", None)
    loaded = {m.get("name"): m for m in _entries(ps)}
    models = []
    for entry in _entries(tags):
        name = str(entry.get("name") or entry.get("model") or "?")
        running = loaded.get(name)
        models.append(ModelEntry(name, _text(entry.get("digest")), loaded=running is not None,
                                 size_vram=running.get("size_vram") if running else None,
                                 modified_at=_text(entry.get("modified_at"))))
    # Ollama runs an embedding model with one slot, whatever OLLAMA_NUM_PARALLEL says.
    server = Server(url, "ollama", version=version, models=models, slots=1)
    server.model = _find(models, model)
    if server.model is not None:
        info = NodeInfo(digest=server.model.digest, loaded=server.model.loaded,
                        version=version, size_vram=server.model.size_vram, norm=1.0)
        status, show = await get("POST", "/api/show", {"model": model})
        for key, value in ((show or {}).get("model_info") or {}).items() if status == 200 else ():
            if key.endswith(".embedding_length"):
                info.dimension = int(value)
            elif key.endswith(".context_length"):
                info.context_length = int(value)
        info.dimension = dimensions or info.dimension
        server.info = info
    return server


async def _llama_cpp(get: Get, url: str, props: dict, model: str | None,
                     dimensions: int | None) -> Server:
    _, listing = await get("GET", "/v1/models", None)
    entries = [e for e in (listing or {}).get("data") or [] if isinstance(e, dict)] \
        if isinstance(listing, dict) else []
    models = [ModelEntry(str(e.get("id")), loaded=True) for e in entries]
    slots = props.get("total_slots")
    server = Server(url, "llama.cpp", version=_text(props.get("build_info")), models=models,
                    slots=int(slots) if isinstance(slots, int) else None)
    server.model = _find(models, model, loose=True)
    if server.model is not None:
        n_embd = next(((e.get("meta") or {}).get("n_embd") for e in entries
                       if e.get("id") == server.model.name), None)
        server.info = NodeInfo(dimension=dimensions or n_embd, loaded=True,
                               total_slots=server.slots)
        if server.info.dimension is None:
            return await _with_probe(get, server, model, dimensions)
    return server


async def _with_probe(get: Get, server: Server, model: str | None,
                      dimensions: int | None) -> Server:
    """The dimension and norm of the model's vectors, from one short embedding."""
    server.model = server.model or _find(server.models, model, loose=True)
    if server.model is None:
        return server
    body = {"model": model, "input": ["dimension probe"], "encoding_format": "float"}
    if dimensions:
        body["dimensions"] = dimensions
    status, answer = await get("POST", "/v1/embeddings", body)
    info = server.info or NodeInfo(loaded=True, total_slots=server.slots)
    info.digest = server.model.digest
    try:
        vector = answer["data"][0]["embedding"] if status == 200 else None
        info.dimension = len(vector) if vector else None
        info.norm = math.sqrt(sum(float(x) * float(x) for x in vector)) if vector else None
    except (KeyError, IndexError, TypeError, ValueError):
        pass
    server.info = info
    return server


def _find(models: list[ModelEntry], name: str | None, loose: bool = False) -> ModelEntry | None:
    """Ollama names default their tag to ``:latest``; llama.cpp and TEI list a file or
    repository name (``loose``: it may carry the model name with a prefix or suffix)."""
    if not name:
        return None
    wanted = {name, name + ":latest", name.removesuffix(":latest")}
    for entry in models:
        if entry.name in wanted:
            return entry
    if loose:
        key = name.removesuffix(":latest").lower()
        for entry in models:
            base = entry.name.rsplit("/", 1)[-1].lower()
            if key in base:
                return entry
    return None


def _entries(data: Any) -> list[dict]:
    models = data.get("models") if isinstance(data, dict) else None
    return [m for m in models or [] if isinstance(m, dict)]


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
