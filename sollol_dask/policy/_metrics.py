"""Request latencies as a histogram: the buckets every router counts in, and quantiles
read back from them (the dashboard's p50/p95, Prometheus's ``sollol_request_seconds``)."""

from __future__ import annotations

import math

# Upper bounds (seconds) of the latency histogram buckets; the last one is +Inf.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, math.inf)


def histogram_quantile(counts: list[int], q: float) -> float | None:
    """The bucket upper bound below which a fraction ``q`` of the samples fall."""
    total = sum(counts)
    if not total:
        return None
    seen = 0
    for bound, count in zip(LATENCY_BUCKETS, counts):
        seen += count
        if seen >= q * total:
            return bound
    return math.inf
