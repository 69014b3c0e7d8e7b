"""How long a failed batch waits before it is sent again (to another node, usually)."""

from __future__ import annotations

import math


def backoff_delay(attempt: int, base: float = 0.05, cap: float = 2.0) -> float:
    """Delay before retry ``attempt`` (1-based) of a batch, exponential and capped."""
    return min(cap, base * math.pow(2, max(0, attempt - 1)))
