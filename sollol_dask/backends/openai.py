"""OpenAI-compatible ``POST /v1/embeddings``: llama.cpp, vLLM, TEI, Infinity, Ollama's /v1."""

from __future__ import annotations

import binascii
from collections.abc import Sequence

import numpy as np
import orjson

from .._exceptions import BadResponseError, ModelNotFoundError
from .._outcome import Failure
from ._base import Backend, EmbedOptions, FetchJson, NodeInfo, malformed
from ..policy._limits import some_names
from ._checks import check_indexes, check_rows, reported_count, typical_norm
from ._served import identify_server, other_model, served_models, serves


class OpenAIBackend(Backend):
    api = "openai"
    # llama.cpp with -np N and vLLM batch concurrent requests for real; the node's cap is
    # raised to what the server reports (llama.cpp /props total_slots) when it does.
    default_max_inflight = 4
    embed_path = "/v1/embeddings"
    # llama.cpp's tokenizer (other OpenAI-compatible servers answer 404: then not asked again)
    tokenize_path = "/tokenize"

    def tokenize_body(self, text: str, opts: EmbedOptions) -> bytes:
        return orjson.dumps({"content": text, "add_special": True})

    def parse_token_count(self, reply) -> int | None:
        if reply.status != 200:
            return None
        data = _loads_or_none(reply.content)
        tokens = data.get("tokens") if isinstance(data, dict) else None
        return len(tokens) if isinstance(tokens, list) else None

    def embed_body(self, texts: Sequence[str], opts: EmbedOptions) -> bytes:
        body: dict = {"model": opts.model, "input": list(texts), "encoding_format": opts.encoding}
        if opts.dimensions is not None:
            body["dimensions"] = opts.dimensions
        return orjson.dumps(body)

    def parse_answer(self, content: bytes, count: int, node: str, *,
                     dimension: int | None = None,
                     norm: float | None = None) -> tuple[np.ndarray, int | None]:
        try:
            data = orjson.loads(content)
            items = data["data"]
            indexes = [item["index"] for item in items]
            values = [item["embedding"] for item in items]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise malformed(node, f"{type(exc).__name__}: {exc}") from None
        usage = data.get("usage") if isinstance(data, dict) else None
        tokens = reported_count(usage.get("prompt_tokens", usage.get("total_tokens"))
                                if isinstance(usage, dict) else None)
        if len(values) != count:
            return check_rows(np.empty((len(values), 0), np.float32), count, node), None
        # Rows are placed by their index, which must name each input once: a server that
        # numbers them all 0 (or skips one) would otherwise misplace rows silently.
        order = check_indexes(indexes, count, node)
        if count == 0:
            return np.empty((0, 0), np.float32), tokens
        if isinstance(values[0], str):
            matrix = _decode_base64(values, node)
        else:
            try:
                matrix = np.array(values, dtype=np.float32)
            except (ValueError, TypeError) as exc:
                raise malformed(node, f"vectors are not numeric lists of one length ({exc})") \
                    from None
        if matrix.ndim == 2 and not np.array_equal(order, np.arange(count)):
            placed = np.empty_like(matrix)
            placed[order] = matrix
            matrix = placed
        return check_rows(matrix, count, node, dimension=dimension, norm=norm), tokens

    async def _describe(self, fetch: FetchJson, opts: EmbedOptions, node: str) -> NodeInfo:
        info = NodeInfo(loaded=True)
        reply = await fetch("GET", "/props", None)  # llama.cpp only; others 404
        props = self.probe_json(reply, node, opts.model, optional=True) \
            if reply.status != 200 else _loads_or_none(reply.content)
        if isinstance(props, dict):  # anything else there is some other server's business
            try:
                info.total_slots = int(props.get("total_slots") or 0) or None
                settings = props.get("default_generation_settings") or {}
                info.context_length = settings.get("n_ctx") or None
            except (AttributeError, TypeError, ValueError):
                pass
        # llama-server answers any model name with its own model's vectors: what
        # /v1/models lists is checked first, so output is never labelled wrongly.
        listing = _loads_or_none((await fetch("GET", "/v1/models", None)).content)
        models = served_models(listing)
        if models and not serves(models, opts.model):
            raise await self._not_served(fetch, opts.model, node, models)
        # No standard metadata route tells the dimension: embed one short text. Its norm
        # tells whether this server normalizes (llama.cpp and TEI do by default).
        reply = await fetch(
            "POST", self.embed_path, {"model": opts.model, "input": ["dimension probe"],
                                      "encoding_format": opts.encoding,
                                      **({"dimensions": opts.dimensions} if opts.dimensions else {})}
        )
        if reply.status == 404:
            kind = await identify_server(fetch, node)
            if kind is None or kind.api != "ollama":  # Ollama: `ollama pull` is the hint
                raise self.classify_reply(reply, node, opts.model)
            raise Backend.missing_model(self, opts.model, node, self.error_message(reply.content))
        if reply.status != 200:
            raise self.classify_reply(reply, node, opts.model)
        vector = self.parse_embed(reply.content, 1, node)
        info.dimension, info.norm = int(vector.shape[1]), typical_norm(vector)
        if opts.dimensions is None:
            self._check_model_dimension(listing, opts, node, info.dimension)
        return info

    async def _not_served(self, fetch: FetchJson, model: str, node: str,
                          models: tuple[str, ...]) -> ModelNotFoundError:
        kind = await identify_server(fetch, node)
        if kind is not None and kind.api == "ollama":  # Ollama's /v1 lists what was pulled
            return ModelNotFoundError(
                f"model {model!r} not found on {node}: run `ollama pull {model}` there (it "
                f"has: {some_names(models)})", node=node)
        return other_model(node, model, models)

    def missing_model(self, model: str, node: str, text: str,
                      status: int | None = 404) -> ModelNotFoundError:
        return ModelNotFoundError(
            f"model {model!r} not found on {node} (server said: {text}): an OpenAI-compatible "
            f"server serves the models it was started with, listed at {node}/v1/models; pass "
            "one of them as model=, or remove the node", node=node, status=status)

    def _check_model_dimension(self, listing, opts: EmbedOptions, node: str,
                               dimension: int) -> None:
        """llama.cpp lists its model's embedding size (``meta.n_embd``) in /v1/models: a
        probe vector of another length is not one embedding per text (per-token output,
        as ``llama-server --pooling none`` sends) and must not define the fleet."""
        entries = listing.get("data") if isinstance(listing, dict) else None
        sizes = {entry.get("id"): (entry.get("meta") or {}).get("n_embd")
                 for entry in entries or [] if isinstance(entry, dict)}
        known = {n for n in sizes.values() if isinstance(n, int)}
        n_embd = sizes.get(opts.model) if isinstance(sizes.get(opts.model), int) \
            else (known.pop() if len(known) == 1 else None)
        if n_embd and n_embd != dimension:
            raise BadResponseError(
                f"{node} returned a vector of dimension {dimension} to a probe, but its model "
                f"has n_embd {n_embd} (/v1/models): not one embedding per text (check the "
                "server's pooling); node excluded", node=node, failure=Failure.NODE_FATAL)


def _loads_or_none(content: bytes):
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return None


def _decode_base64(values: list, node: str) -> np.ndarray:
    """Little-endian float32 vectors, one base64 string each, as one (n, dim) matrix:
    decoded string by string (binascii, C) and joined, so numpy sees one buffer."""
    try:
        raw = [binascii.a2b_base64(v, strict_mode=True) for v in values]
    except (binascii.Error, TypeError, ValueError) as exc:
        raise malformed(node, f"bad base64 vector ({type(exc).__name__}: {exc})") from None
    width = len(raw[0])
    if width % 4 or any(len(r) != width for r in raw):
        raise malformed(node, "base64 vectors of different lengths in one response")
    return np.frombuffer(b"".join(raw), dtype="<f4").reshape(len(raw), -1).astype(np.float32, copy=False)
