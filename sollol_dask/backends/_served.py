"""Which server answers at a node's URL and which models it serves, for hints and checks.

A node configured with the wrong ``api`` (an Ollama node pointed at llama-server) must be
told what it is talking to and how to configure it, and an OpenAI-compatible server that
answers any model name (llama-server does) must not have its vectors labelled with a
model it does not serve: ``/v1/models`` says what it serves.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import orjson

from .._exceptions import ModelNotFoundError, SollolError
from ..policy._limits import clip, some_names


@dataclasses.dataclass(frozen=True)
class ServerKind:
    """What a probe recognised: ``name`` ("llama.cpp", "TEI", ...) and the ``api`` to use."""

    name: str
    api: str
    models: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.api == "ollama":
            return "an Ollama server"
        serving = f", serving {some_names(self.models)}" if self.models else ""
        return f"an OpenAI-compatible server ({self.name}{serving})"


def wrong_api_hint(node: str, kind: ServerKind) -> str:
    """How to configure ``node`` for the server ``kind`` that answers there."""
    if kind.api == "openai":
        return (f"{node} is {kind.describe()}, not an Ollama server: use "
                f"Node({node!r}, api='openai') (command line: --openai-node {node})")
    return f"{node} is {kind.describe()}: use Node({node!r}) (command line: --node {node})"


async def identify_server(fetch, node: str) -> ServerKind | None:
    """What answers at ``node``, from the routes each kind of server has; None: unknown.

    ``fetch(method, path, payload)`` is a backend's ``FetchJson``. Only read-only GETs.
    """
    version = await _json(fetch, "/api/version")
    if isinstance(version, dict) and "version" in version:
        return ServerKind("Ollama", "ollama")
    listing = await _json(fetch, "/v1/models")
    models = served_models(listing)
    props = await _json(fetch, "/props")
    if isinstance(props, dict) and ("default_generation_settings" in props
                                    or "total_slots" in props) or _owned_by(listing) == "llamacpp":
        return ServerKind("llama.cpp llama-server", "openai", models)
    info = await _json(fetch, "/info")
    if isinstance(info, dict) and isinstance(info.get("model_id"), str):
        return ServerKind("text-embeddings-inference", "openai", models or (info["model_id"],))
    if models:
        owner = _owned_by(listing)
        return ServerKind(owner if owner and owner not in ("system", "openai") else
                          "OpenAI-compatible", "openai", models)
    return None


def served_models(listing: Any) -> tuple[str, ...]:
    """Model names (ids and aliases) an OpenAI-style ``/v1/models`` answer lists."""
    entries = listing.get("data") if isinstance(listing, dict) else None
    names: list[str] = []
    for entry in entries if isinstance(entries, list) else ():
        if not isinstance(entry, dict):
            continue
        for name in [entry.get("id"), *(entry.get("aliases") or [])]:
            if isinstance(name, str) and name and name not in names:
                names.append(name)
    return tuple(names)


def serves(models: Iterable[str], model: str) -> bool:
    """Whether a listing names ``model``: exactly, with or without Ollama's ``:latest``
    tag, or as a model file's name (llama-server started without ``-a`` lists its path)."""
    wanted = {model, model.removesuffix(":latest"), model + ":latest"}
    for name in models:
        base = name.rsplit("/", 1)[-1]
        if {name, base, base.removesuffix(".gguf")} & wanted:
            return True
    return False


def other_model(node: str, model: str, models: tuple[str, ...]) -> ModelNotFoundError:
    """A server that would answer ``model`` with vectors of another model."""
    listed = some_names(models)
    first = clip(models[0], 80)
    return ModelNotFoundError(
        f"{node} serves {listed} (its /v1/models), not {model!r}: its vectors would be "
        f"labelled with the wrong model. Pass model={first!r}, or start the server with "
        f"{model!r} (llama-server: -a {model} names its model)", node=node, status=None)


def _owned_by(listing: Any) -> str | None:
    entries = listing.get("data") if isinstance(listing, dict) else None
    if isinstance(entries, list) and entries and isinstance(entries[0], dict):
        owner = entries[0].get("owned_by")
        return owner if isinstance(owner, str) else None
    return None


async def _json(fetch, path: str) -> Any:
    try:
        reply = await fetch("GET", path, None)
    except SollolError:  # unreachable meanwhile, or an answer too large: nothing learned
        return None
    if reply.status != 200:
        return None
    try:
        return orjson.loads(reply.content)
    except orjson.JSONDecodeError:
        return None
