"""One vector for a row from its windows' vectors (the ``chunk`` length policy, pooled).

The mean of the window vectors, each window weighing the same; when the run's vectors
are L2-normalised (Ollama always, llama.cpp and TEI by default), the mean is normalised
again, so a pooled vector looks like any other vector of the run.
"""

from __future__ import annotations

import numpy as np


def pool_mean(vectors: np.ndarray, normalized: bool) -> np.ndarray:
    """The float32 mean of ``vectors`` (windows, dim); unit length if ``normalized``."""
    if len(vectors) == 1:
        return vectors[0].astype(np.float32, copy=True)
    mean = vectors.astype(np.float64).mean(axis=0)
    if normalized:
        norm = np.linalg.norm(mean)
        if norm > 0:
            mean /= norm
    return mean.astype(np.float32)
