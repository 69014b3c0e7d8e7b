"""Identical texts are embedded once: ``dedupe`` maps a list to its distinct texts.

Batches themselves are cut when a slot is granted (``_job.Job.take``), sized per node."""

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

