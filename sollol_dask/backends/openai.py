"""OpenAI-compatible ``POST /v1/embeddings``: llama.cpp, vLLM, TEI, Infinity, Ollama's /v1."""

from __future__ import annotations

import binascii
from collections.abc import Sequence

import numpy as np
import orjson

from ._base import Backend, EmbedOptions, Fetch, NodeInfo, check_matrix, malformed


class OpenAIBackend(Backend):
    api = "openai"
    # llama.cpp with -np N and vLLM batch concurrent requests for real; the node's cap is
    # raised to what the server reports (llama.cpp /props total_slots) when it does.
    default_max_inflight = 4
    embed_path = "/v1/embeddings"

    def embed_body(self, texts: Sequence[str], opts: EmbedOptions) -> bytes:
        body: dict = {"model": opts.model, "input": list(texts), "encoding_format": opts.encoding}
        if opts.dimensions is not None:
            body["dimensions"] = opts.dimensions
        return orjson.dumps(body)

    def parse_embed(self, content: bytes, count: int, node: str) -> np.ndarray:
        try:
            items = orjson.loads(content)["data"]
            items.sort(key=lambda item: item["index"])
            values = [item["embedding"] for item in items]
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise malformed(node, f"{type(exc).__name__}: {exc}") from None
        if len(values) != count:
            return check_matrix(np.empty((len(values), 0), np.float32), count, node)
        if count == 0:
            return np.empty((0, 0), np.float32)
        if isinstance(values[0], str):
            matrix = _decode_base64(values, node)
        else:
            try:
                matrix = np.array(values, dtype=np.float32)
            except (ValueError, TypeError) as exc:
                raise malformed(node, f"vectors are not numeric lists of one length ({exc})") \
                    from None
        return check_matrix(matrix, count, node)

    async def describe(self, fetch: Fetch, opts: EmbedOptions, node: str) -> NodeInfo:
        info = NodeInfo(loaded=True)
        status, content = await fetch("GET", "/props", None)  # llama.cpp only; others 404
        if status == 200:
            try:
                props = orjson.loads(content)
                info.total_slots = int(props.get("total_slots") or 0) or None
                settings = props.get("default_generation_settings") or {}
                info.context_length = settings.get("n_ctx") or None
            except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
                pass
        # No standard metadata route tells the dimension: embed one short text.
        status, content = await fetch(
            "POST", self.embed_path, {"model": opts.model, "input": ["dimension probe"],
                                      "encoding_format": opts.encoding,
                                      **({"dimensions": opts.dimensions} if opts.dimensions else {})}
        )
        if status != 200:
            raise self.classify(status, content, node, opts.model)
        info.dimension = int(self.parse_embed(content, 1, node).shape[1])
        return info


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
