"""Ollama's native protocol: ``POST /api/embed`` with a list input."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import orjson

from .._exceptions import ModelNotFoundError, NodeError
from ..policy._limits import some_names
from .._outcome import Failure
from ._base import Backend, EmbedOptions, FetchJson, NodeInfo, malformed
from ._checks import check_rows, reported_count
from ._served import identify_server, wrong_api_hint


class OllamaBackend(Backend):
    api = "ollama"
    # One slot per embedding model on the server: a second request in flight hides the
    # HTTP round trip; more only queues (ollama-behaviour.md).
    default_max_inflight = 2
    embed_path = "/api/embed"

    def embed_body(self, texts: Sequence[str], opts: EmbedOptions) -> bytes:
        body: dict = {"model": opts.model, "input": list(texts), "truncate": opts.truncate}
        if opts.keep_alive is not None:
            body["keep_alive"] = opts.keep_alive
        if opts.dimensions is not None:
            body["dimensions"] = opts.dimensions
        if opts.options:
            body["options"] = opts.options
        return orjson.dumps(body)

    def parse_answer(self, content: bytes, count: int, node: str, *,
                     dimension: int | None = None,
                     norm: float | None = None) -> tuple[np.ndarray, int | None]:
        try:
            data = orjson.loads(content)
            rows = data["embeddings"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise malformed(node, f"{type(exc).__name__}: {exc}") from None
        if not isinstance(rows, list):
            raise malformed(node, "'embeddings' is not a list")
        if len(rows) != count:
            return check_rows(np.empty((len(rows), 0), np.float32), count, node), None
        try:
            with np.errstate(over="ignore"):  # overflow to inf is caught by check_rows
                matrix = np.array(rows, dtype=np.float32)
        except (ValueError, TypeError) as exc:
            raise malformed(node, f"vectors are not numeric lists of one length ({exc})") from None
        return (check_rows(matrix.reshape(count, -1) if count == 0 else matrix, count, node,
                           dimension=dimension, norm=norm),
                reported_count(data.get("prompt_eval_count") if isinstance(data, dict) else None))

    async def _describe(self, fetch: FetchJson, opts: EmbedOptions, node: str) -> NodeInfo:
        # /api/embed L2-normalizes every vector (ollama-behaviour.md): the fleet's norm
        # is 1, and every answer is checked against it, so a node that does otherwise
        # is refused instead of mixed in. Measuring it here would cost an embedding
        # request per node per worker (and wait for a cold model to load).
        info = NodeInfo(norm=1.0)
        version = self.probe_json(await fetch("GET", "/api/version", None), node, opts.model,
                                  optional=True)
        if version is not None:
            info.version = version.get("version")
        reply = await fetch("GET", "/api/tags", None)
        if reply.status == 404:
            kind = await identify_server(fetch, node)
            hint = wrong_api_hint(node, kind) if kind is not None and kind.api != "ollama" \
                else (f"{node} has no /api/tags (HTTP 404): is it an Ollama server? For "
                      "llama.cpp, vLLM, TEI or Infinity use Node(url, api='openai')")
            raise NodeError(hint, node=node, status=404, retryable=False,
                            failure=Failure.NODE_FATAL)
        models = self.probe_json(reply, node, opts.model).get("models") or []
        entry = _find_model(models, opts.model)
        if entry is None:
            raise ModelNotFoundError(
                f"model {opts.model!r} not found on {node}: run `ollama pull {opts.model}` "
                f"there (it has: {some_names(str(m.get('name', '?')) for m in models)})",
                node=node,
            )
        info.digest = entry.get("digest")
        show = self.probe_json(await fetch("POST", "/api/show", {"model": opts.model}), node,
                               opts.model)
        for key, value in (show.get("model_info") or {}).items():
            if key.endswith(".embedding_length"):
                info.dimension = int(value)
            elif key.endswith(".context_length"):
                info.context_length = int(value)
        ps = self.probe_json(await fetch("GET", "/api/ps", None), node, opts.model, optional=True)
        if ps is not None:
            entry = _find_model(ps.get("models") or [], opts.model)
            info.loaded = entry is not None
            if entry is not None:
                info.size, info.size_vram = entry.get("size"), entry.get("size_vram")
                # /api/show gives the trained context; a loaded model may run with a
                # smaller num_ctx, which /api/ps reports: the smaller one is what fits.
                loaded_ctx = entry.get("context_length")
                if isinstance(loaded_ctx, int) and loaded_ctx > 0:
                    info.context_length = min(info.context_length or loaded_ctx, loaded_ctx)
        if opts.dimensions is not None:
            info.dimension = opts.dimensions
        return info

    def warm_body(self, opts: EmbedOptions) -> bytes:
        # An empty input only loads the model (ollama-behaviour.md); same options as
        # every request, or Ollama would reload.
        return self.embed_body([], opts)


def _find_model(models: list, name: str) -> dict | None:
    """Ollama names default their tag to ``:latest``; match either spelling."""
    wanted = {name, name + ":latest"} if ":" not in name else {name}
    if name.endswith(":latest"):
        wanted.add(name[: -len(":latest")])
    for entry in models:
        if entry.get("name") in wanted or entry.get("model") in wanted:
            return entry
    return None
