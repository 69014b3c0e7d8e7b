"""The simulated node's vectors: a pure, documented function of (model, text, dimension).

``sim_vector(model, text, dim)``:
1. ``seed`` = the first 8 bytes (little-endian) of ``blake2b(model + "\\0" + text)``;
2. for ``j`` in ``0..dim-1``: ``z = splitmix64(seed + j)``, and value ``j`` is
   ``(z >> 40) / 2**23 - 1`` as float32 (uniform in [-1, 1));
3. the vector is divided by its L2 norm (float32).
A whole batch is computed in one vectorized numpy pass, so the sim is never the
bottleneck. Tests call this to check every row a run returns.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

CHARS_PER_TOKEN = 4  # the sim's tokenizer: one token per 4 characters, at least 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def count_tokens(text: str) -> int:
    return max(1, -(-len(text) // CHARS_PER_TOKEN))


def truncate_text(text: str, context_length: int) -> str:
    """What the sim embeds when a text is longer than the context (truncate=true)."""
    return text[: context_length * CHARS_PER_TOKEN]


def _seed(model: str, text: str) -> int:
    data = f"{model}\0{text}".encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def sim_vectors(model: str, texts: Sequence[str], dim: int) -> np.ndarray:
    """``sim_vector`` for each text, as a float32 ``(len(texts), dim)`` matrix."""
    seeds = np.array([_seed(model, t) for t in texts], dtype=np.uint64)
    z = seeds[:, None] + np.arange(dim, dtype=np.uint64)[None, :] + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    z ^= z >> np.uint64(31)
    values = (z >> np.uint64(40)).astype(np.float32) / np.float32(2**23) - np.float32(1)
    norms = np.linalg.norm(values, axis=1, keepdims=True)
    return (values / norms).astype(np.float32, copy=False)


def sim_vector(model: str, text: str, dim: int) -> np.ndarray:
    return sim_vectors(model, [text], dim)[0]


def sim_digest(model: str, variant: str = "") -> str:
    """The digest a sim node reports for a model (``variant`` makes a different build)."""
    return hashlib.sha256(f"sim:{model}:{variant}".encode()).hexdigest()
