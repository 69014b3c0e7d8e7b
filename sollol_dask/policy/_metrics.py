"""Request latencies: the histogram buckets every router counts in (Prometheus's
``sollol_request_seconds``) and a sketch that keeps them to within 1% (the p50/p95 shown
by the dashboard and ``status``; bucket edges such as "2.5 s" say little)."""

from __future__ import annotations

import math

# Upper bounds (seconds) of the latency histogram buckets; the last one is +Inf.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, math.inf)


class LatencySketch:
    """Latencies counted in log-spaced bins, each 2% wide (DDSketch's idea), so any
    quantile is known to within 1%; exact min and max make a uniform set read back
    exactly. Mergeable by adding counts (one sketch per worker, merged on the
    scheduler) and bounded: past ``MAX_BINS`` the lowest bins are folded together,
    which blurs only the fastest requests.

    >>> s = LatencySketch()
    >>> for x in (0.2, 0.2, 0.3, 4.0): s.add(x)
    >>> round(s.quantile(0.5), 2), s.quantile(1.0)
    (0.2, 4.0)
    """

    GAMMA = 1.02
    MAX_BINS = 256  # 1.02**256: latencies spanning 150x (20 ms..3 s) fit unfolded
    FLOOR = 1e-4  # seconds; anything faster is counted as this

    def __init__(self) -> None:
        self.bins: dict[int, int] = {}
        self.count = 0
        self.min: float | None = None
        self.max: float | None = None

    def add(self, seconds: float) -> None:
        index = math.ceil(math.log(max(seconds, self.FLOOR)) / math.log(self.GAMMA))
        self.bins[index] = self.bins.get(index, 0) + 1
        self.count += 1
        self.min = seconds if self.min is None else min(self.min, seconds)
        self.max = seconds if self.max is None else max(self.max, seconds)
        self._fold()

    def merge(self, other: LatencySketch) -> None:
        for index, count in other.bins.items():
            self.bins[index] = self.bins.get(index, 0) + count
        self.count += other.count
        for attr, pick in (("min", min), ("max", max)):
            mine, theirs = getattr(self, attr), getattr(other, attr)
            setattr(self, attr, theirs if mine is None else mine if theirs is None
                    else pick(mine, theirs))
        self._fold()

    def quantile(self, q: float) -> float | None:
        """The latency at or below which a fraction ``q`` of the requests fall (the
        nearest-rank ``q`` quantile, within 1%; None if there were no requests)."""
        if not self.count:
            return None
        rank = max(1, math.ceil(q * self.count - 1e-9))  # the rank-th fastest request
        seen = 0
        for index in sorted(self.bins):
            seen += self.bins[index]
            if seen >= rank:
                break
        estimate = 2 * self.GAMMA ** index / (self.GAMMA + 1)  # the bin's middle
        return min(max(estimate, self.min), self.max)

    def _fold(self) -> None:
        if len(self.bins) <= self.MAX_BINS:
            return
        ordered = sorted(self.bins)
        excess = len(ordered) - self.MAX_BINS
        keep = ordered[excess]  # the lowest bins go into the lowest one kept
        for index in ordered[:excess]:
            self.bins[keep] += self.bins.pop(index)

    @classmethod
    def merged(cls, wires: list[dict]) -> LatencySketch:
        """The sum of several workers' sketches, straight from their wire form (the
        scheduler merges one per node and worker each second)."""
        sketch = cls()
        bins = sketch.bins
        for wire in wires:
            for index, count in wire["bins"]:
                bins[index] = bins.get(index, 0) + count
            for attr, pick in (("min", min), ("max", max)):
                mine, theirs = getattr(sketch, attr), wire[attr]
                if theirs is not None:
                    setattr(sketch, attr, theirs if mine is None else pick(mine, theirs))
        sketch.bins = {int(i): int(c) for i, c in bins.items()}
        sketch.count = sum(sketch.bins.values())
        sketch._fold()
        return sketch

    # Sent in the workers' metrics events (msgpack: lists, not int-keyed dicts).
    def to_wire(self) -> dict:
        return {"bins": sorted(self.bins.items()), "min": self.min, "max": self.max}

    @classmethod
    def from_wire(cls, wire: dict) -> LatencySketch:
        sketch = cls()
        sketch.bins = {int(i): int(c) for i, c in wire["bins"]}
        sketch.count = sum(sketch.bins.values())
        sketch.min, sketch.max = wire["min"], wire["max"]
        return sketch
