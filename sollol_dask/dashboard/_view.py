"""The fleet as the scheduler sees it: worker routers' snapshots merged per node, the
fleet's throughput over the last ten minutes (so a page opened now shows what came before),
jobs, and recent errors and state changes.

Pure data (an injected clock, no Dask): the page, /metrics and `sollol-dask status` all
read it through ``FleetView.data()``.
"""

from __future__ import annotations

import time
from collections import Counter, deque

from ..policy._metrics import LATENCY_BUCKETS, LatencySketch
from ._jobs import JobTracker

HISTORY_SECONDS = 600  # of fleet throughput and capacity, one point a second
RATE_WINDOW = 5.0  # seconds of history a texts/s figure averages over


class FleetView:
    def __init__(self, clock=time.time) -> None:
        self.clock = clock
        self.snapshots: dict[tuple[str, str], list[dict]] = {}  # (worker, config) -> nodes
        # Texts per node at recent instants: rates are differences over RATE_WINDOW.
        self.history: deque[tuple[float, dict[str, int]]] = deque()
        # (time, fleet texts/s, measured capacity): the throughput chart, bounded.
        self.series: deque[tuple[float, float, float]] = deque()
        self.events: deque[tuple[float, str]] = deque(maxlen=100)
        self.jobs = JobTracker(clock, self._event)
        self.caps: dict[str, int] = {}  # cluster-wide caps, from the slot broker
        # (time, tokens per node): tokens/s beside texts/s, sampled with ``history``
        self.token_history: deque[tuple[float, dict[str, int]]] = deque()
        # The snapshots merged per node, kept until the next report: with 1,000 nodes
        # on 4 workers a merge is 4,000 entries, and the page, /metrics and the
        # throughput sampler all read the same one.
        self._merged: dict[str, dict] | None = None
        self._sums: tuple | None = None  # ``_totals()`` while nothing merged them

    # -- input -----------------------------------------------------------------------

    def update(self, worker: str, config: str, nodes: list[dict]) -> None:
        old = {n["node"]: n for n in self.snapshots.get((worker, config), [])}
        for n in nodes:
            before = old.get(n["node"])
            if before is not None and before["state"] != n["state"]:
                reason = f": {n['reason'][:160]}" if n.get("reason") else ""
                self._event(f"{n['node']} {before['state']} -> {n['state']} on {worker}{reason}")
            if n["errors"] and (before is None or n["errors"] != before["errors"]):
                new_errors = Counter(n["errors"]) - Counter(before["errors"] if before else {})
                for kind, count in new_errors.items():
                    self._event(f"{n['node']}: {count} {kind} error(s) seen by {worker}")
        self.snapshots[(worker, config)] = nodes
        self._merged = self._sums = None

    def remove_worker(self, worker: str) -> None:
        for key, nodes in self.snapshots.items():
            if key[0] == worker:  # keep its totals, nothing is in flight any more
                self.snapshots[key] = [dict(n, inflight=0) for n in nodes]
        self._merged = self._sums = None
        self._event(f"worker {worker} left")

    def job_started(self, job: str, output: str, rows: int, parts: int) -> None:
        """A parquet run into ``output`` begins."""
        self.jobs.started(job, output, rows, parts)
        self._event(f"job {output} started: {rows} rows in {parts} parts")

    def part_done(self, job: str, rows: int, **part) -> None:
        """A partition of a job finished (see ``JobTracker.part_done``)."""
        self.jobs.part_done(job, rows, **part)

    def _event(self, text: str) -> None:
        self.events.append((self.clock(), text))

    def _sample(self) -> None:
        """Record per-node totals of texts and tokens now (rates are their differences)."""
        texts, tokens, _ = self._totals()
        now = self.clock()
        for history, totals in ((self.history, texts), (self.token_history, tokens)):
            if history and now - history[-1][0] < 1.0:
                history[-1] = (history[-1][0], totals)
                continue
            history.append((now, totals))
            # Keep one sample at least RATE_WINDOW old, none older.
            while len(history) > 2 and now - history[1][0] >= RATE_WINDOW:
                history.popleft()

    def tick(self) -> None:
        """Add a point to the throughput series (the monitor calls this every second,
        so the chart goes on while no worker reports, and reading ``data()`` does too)."""
        self._sample()
        now = self.clock()
        if self.series and now - self.series[-1][0] < 1.0:
            return
        self.series.append((now, sum(self.rates().values()), self._capacity()))
        while now - self.series[0][0] > HISTORY_SECONDS:
            self.series.popleft()

    def _capacity(self) -> float:
        """Measured texts/s of the nodes that every worker sees up."""
        return self._totals()[2]

    def _totals(self) -> tuple[dict[str, int], dict[str, int], float]:
        """Texts and tokens per node, and the capacity: what the monitor's tick needs each
        second, without the full merge (which waits for a page, /metrics or status)."""
        if self._merged is not None:
            merged = self._merged.values()
            return ({r["node"]: r["texts"] for r in merged},
                    {r["node"]: r["tokens"] for r in merged},
                    sum(r["speed"] for r in merged if r["health"] == "up"))
        if self._sums is None:
            texts: Counter = Counter()
            tokens: Counter = Counter()
            speeds: dict[str, float] = {}
            not_up: set[str] = set()
            for nodes in self.snapshots.values():
                for n in nodes:
                    name = n["node"]
                    texts[name] += n["texts"]
                    tokens[name] += n.get("tokens", 0)
                    speeds[name] = max(speeds.get(name, 0.0), n.get("speed") or 0.0)
                    if n["state"] != "up":
                        not_up.add(name)
            self._sums = (dict(texts), dict(tokens),
                          sum(v for name, v in speeds.items() if name not in not_up))
        return self._sums

    def _merge(self) -> dict[str, dict]:
        """The workers' snapshots summed per node (rates, caps and quantiles aside);
        computed once per report, whoever reads it."""
        if self._merged is not None:
            return self._merged
        merged: dict[str, dict] = {}
        for (worker, _), nodes in self.snapshots.items():
            for n in nodes:
                row = merged.get(n["node"])
                if row is None:
                    row = merged[n["node"]] = {
                        "node": n["node"], "model": n["model"], "digest": n.get("digest", ""),
                        "inflight": 0, "cap": 0, "texts": 0, "tokens": 0, "requests": 0,
                        "errors": Counter(), "latency_counts": [0] * len(LATENCY_BUCKETS),
                        "latency_sum": 0.0, "speed": 0.0, "size": n.get("size"),
                        "size_vram": n.get("size_vram"), "reason": "",
                        "seen": Counter(), "sketches": []}
                row["inflight"] += n["inflight"]
                row["texts"] += n["texts"]
                row["requests"] += n["requests"]
                row["tokens"] += n.get("tokens", 0)
                row["cap"] = max(row["cap"], n["cap"])
                if n["errors"]:
                    row["errors"].update(n["errors"])
                row["latency_counts"] = [a + b for a, b in zip(row["latency_counts"],
                                                               n["latency_counts"])]
                row["latency_sum"] += n.get("latency_sum", 0.0)
                row["sketches"].append(n["latency_sketch"])
                row["speed"] = max(row["speed"], n.get("speed") or 0.0)
                row["seen"][n["state"]] += 1
                if n["state"] != "up" and n.get("reason") and not row["reason"]:
                    row["reason"] = n["reason"]
        for row in merged.values():
            seen, sketch = row.pop("seen"), LatencySketch.merged(row.pop("sketches"))
            row["health"] = node_health(seen)
            row["state"] = "up" if seen.keys() == {"up"} else ", ".join(
                f"{state} ({count} of {sum(seen.values())} workers)" for state, count in seen.items())
            row["errors"] = dict(row["errors"])
            row["p50"], row["p95"] = sketch.quantile(0.5), sketch.quantile(0.95)
        self._merged = merged
        return merged

    # -- output ----------------------------------------------------------------------

    def rates(self, history: deque | None = None) -> dict[str, float]:
        """Texts/s per node over the last few seconds of history (or tokens/s, given
        ``token_history``)."""
        history = self.history if history is None else history
        if len(history) < 2:
            return {}
        end_t, end = history[-1]
        start_t, start = history[0]
        for t, totals in reversed(history):
            start_t, start = t, totals
            if end_t - t >= RATE_WINDOW:
                break
        span = max(end_t - start_t, 1e-9)
        return {node: (end.get(node, 0) - start.get(node, 0)) / span for node in end}

    def rows(self) -> list[dict]:
        """One row per node, sorted by name: the merged counters, the cluster-wide cap,
        texts/s and tokens/s now, p50/p95, and ``health`` (one word: "up", or the state
        most workers see it in)."""
        rates = self.rates()
        token_rates = self.rates(self.token_history)
        out = []
        for node, merged in self._merge().items():
            row = dict(merged, errors=dict(merged["errors"]))  # the reader's own copy
            row["cap"] = self.caps.get(node, row["cap"])
            row["rate"] = rates.get(node, 0.0)
            row["token_rate"] = token_rates.get(node, 0.0)
            out.append(row)
        return sorted(out, key=lambda r: r["node"])

    def data(self) -> dict:
        self.tick()  # idle workers send nothing: time passing must still lower rates
        rows = self.rows()
        times, rates, capacities = (list(c) for c in zip(*self.series))
        jobs = self.jobs.data()
        return {"time": self.clock(), "nodes": rows,
                "fleet_rate": sum(r["rate"] for r in rows), "capacity": self._capacity(),
                "fleet_token_rate": sum(r["token_rate"] for r in rows),
                "states": count_states(rows),
                "row_errors": sum(j.get("row_errors", 0) for j in jobs),
                "jobs": jobs,
                "events": [{"time": t, "text": x} for t, x in self.events],
                "series": {"time": times, "rate": rates, "capacity": capacities}}


def node_health(seen: Counter) -> str:
    """A node's state in one word: "up" when every worker sees it up, else the other
    state most workers see (a node ejected by 1 of 4 workers is not fully up)."""
    others = [(count, state) for state, count in seen.items() if state != "up"]
    return max(others, key=lambda x: x[0])[1] if others else "up"


def count_states(rows: list[dict]) -> dict[str, int]:
    """Nodes per one-word state, "up" first, then the most numerous."""
    counts = Counter(row["health"] for row in rows)
    return dict(sorted(counts.items(), key=lambda kv: (kv[0] != "up", -kv[1], kv[0])))
