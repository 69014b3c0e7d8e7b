"""A large fleet as the scheduler's monitor sees it, without running it: the snapshots
that ``workers`` Dask workers' routers would send about ``nodes`` nodes, second after
second, fed into a ``FleetView`` on a given clock. For the dashboard's tests (the page,
``/metrics`` and ``sollol-dask status`` with 1,000 nodes) and its benchmark.

The fleet, with ``nodes`` >= 1,000 (figures exact, so tests can assert them):

- every node does 10 texts (40 tokens) a second on each worker, so 10 x ``workers``
  texts/s, and measures 50 texts/s, except
- nodes 100-104, the slowest: measured 5, 6, 7, 8, 9 texts/s;
- node 500: ejected by the first worker only ("connection refused"), 3 connect errors;
- nodes 600 and 601: quarantined on every worker ("wrong dimension 384"), no texts;
- node 700: up, 1 transient error seen by the second worker.
"""

from __future__ import annotations

from ..dashboard import FleetView
from ..policy._metrics import LATENCY_BUCKETS, LatencySketch

SLOW = {100 + i: 5.0 + i for i in range(5)}
EJECTED, QUARANTINED, ERRORING = 500, (600, 601), 700


def node_name(i: int) -> str:
    return f"http://10.0.{i // 250}.{i % 250}:11434"


def _sketch(i: int) -> dict:
    sketch = LatencySketch()
    for seconds in (0.1 + (i % 97) / 100, 0.2 + (i % 89) / 50):  # spread over nodes
        sketch.add(seconds)
    return sketch.to_wire()


def worker_report(i_worker: int, nodes: int, second: int,
                  sketches: list[dict] | None = None) -> list[dict]:
    """One worker's snapshot of every node, ``second`` seconds into the run."""
    rows = []
    for i in range(nodes):
        state, reason, errors = "up", "", {}
        if i in QUARANTINED:
            state, reason = "quarantined", "wrong dimension 384"
        elif i == EJECTED and i_worker == 0:
            state, reason, errors = "ejected", "connection refused", {"connect": 3}
        elif i == ERRORING and i_worker == 1:
            errors = {"transient": 1}
        texts = 0 if i in QUARANTINED else 10 * second
        rows.append({
            "node": node_name(i), "api": "ollama", "model": "nomic-embed-text",
            "digest": "0a1b2c3d4e5f", "state": state, "reason": reason, "cap": 2,
            "inflight": 1 if state == "up" and i_worker < 2 else 0, "max_inflight_seen": 2,
            "requests": texts // 10, "texts": texts, "tokens": 4 * texts, "errors": errors,
            "speed": SLOW.get(i, 50.0), "latency_counts": [0] * len(LATENCY_BUCKETS),
            "latency_sum": 0.0,
            "latency_sketch": sketches[i] if sketches else _sketch(i),
            "size": 300_000_000, "size_vram": 300_000_000, "overtaken": 0})
    return rows


def large_fleet_view(clock, nodes: int = 1000, workers: int = 4,
                     seconds: int = 10) -> FleetView:
    """A ``FleetView`` after ``seconds`` seconds of reports from ``workers`` workers
    (one report each per second, the monitor's tick after them); ``clock`` must have
    ``advance(seconds)``, and is left at the last report's time."""
    view = FleetView(clock=clock)
    sketches = [_sketch(i) for i in range(nodes)]
    for second in range(seconds):
        if second:
            clock.advance(1)
        for w in range(workers):
            view.update(f"tcp://127.0.0.1:{40000 + w}", "c",
                        worker_report(w, nodes, second, sketches))
        view.tick()
    return view
