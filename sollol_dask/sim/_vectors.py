"""The simulated node's vectors: a pure, documented function of (model, text, dimension).

``sim_vector(model, text, dim)`` seeds numpy's PCG64 with the first 8 bytes of
``blake2b(model + "\\0" + text)``, draws ``dim`` standard normals as float32 and divides
by their L2 norm. Tests call it to check every row a run returns.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

CHARS_PER_TOKEN = 4  # the sim's tokenizer: one token per 4 characters, at least 1


def count_tokens(text: str) -> int:
    return max(1, -(-len(text) // CHARS_PER_TOKEN))


def truncate_text(text: str, context_length: int) -> str:
    """What the sim embeds when a text is longer than the context (truncate=true)."""
    return text[: context_length * CHARS_PER_TOKEN]


def sim_vector(model: str, text: str, dim: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.blake2b(f"{model}\0{text}".encode("utf-8", "surrogatepass"),
                                          digest_size=8).digest(), "little")
    vec = np.random.Generator(np.random.PCG64(seed)).standard_normal(dim, dtype=np.float32)
    return vec / np.linalg.norm(vec)


def sim_vectors(model: str, texts: Sequence[str], dim: int) -> np.ndarray:
    out = np.empty((len(texts), dim), np.float32)
    for i, text in enumerate(texts):
        out[i] = sim_vector(model, text, dim)
    return out


def sim_digest(model: str, variant: str = "") -> str:
    """The digest a sim node reports for a model (``variant`` makes a different build)."""
    return hashlib.sha256(f"sim:{model}:{variant}".encode()).hexdigest()
