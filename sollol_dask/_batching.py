"""Turn a list of texts into request batches: dedupe, then split by count and characters."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def dedupe(texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Distinct texts in first-seen order, and for each input the index of its text.

    ``unique[inverse[i]] == texts[i]`` for every ``i``: identical texts are embedded once.
    """
    index: dict[str, int] = {}
    inverse = np.empty(len(texts), dtype=np.int64)
    for i, text in enumerate(texts):
        inverse[i] = index.setdefault(text, len(index))
    return list(index), inverse


def split_batches(lengths: Sequence[int], max_count: int, max_chars: int) -> list[range]:
    """Contiguous ranges of items, each at most ``max_count`` items and ``max_chars``
    characters (a single longer item gets a batch of its own)."""
    if max_count < 1 or max_chars < 1:
        raise ValueError("max_count and max_chars must be >= 1")
    batches: list[range] = []
    start = 0
    chars = 0
    for i, length in enumerate(lengths):
        if i > start and (i - start >= max_count or chars + length > max_chars):
            batches.append(range(start, i))
            start, chars = i, 0
        chars += length
    if start < len(lengths):
        batches.append(range(start, len(lengths)))
    return batches
