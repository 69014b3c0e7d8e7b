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

    # -- input -----------------------------------------------------------------------

    def update(self, worker: str, config: str, nodes: list[dict]) -> None:
        old = {n["node"]: n for n in self.snapshots.get((worker, config), [])}
        for n in nodes:
            before = old.get(n["node"])
            if before is not None and before["state"] != n["state"]:
                reason = f": {n['reason'][:160]}" if n.get("reason") else ""
                self._event(f"{n['node']} {before['state']} -> {n['state']} on {worker}{reason}")
            new_errors = Counter(n["errors"]) - Counter(before["errors"] if before else {})
            for kind, count in new_errors.items():
                self._event(f"{n['node']}: {count} {kind} error(s) seen by {worker}")
        self.snapshots[(worker, config)] = nodes
        self._sample()

    def remove_worker(self, worker: str) -> None:
        for key, nodes in self.snapshots.items():
            if key[0] == worker:  # keep its totals, nothing is in flight any more
                self.snapshots[key] = [dict(n, inflight=0) for n in nodes]
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
        self._sample_tokens()
        now = self.clock()
        if self.history and now - self.history[-1][0] < 1.0:
            self.history[-1] = (self.history[-1][0], self._texts_per_node())
            return
        self.history.append((now, self._texts_per_node()))
        # Keep one sample at least RATE_WINDOW old, none older.
        while len(self.history) > 2 and now - self.history[1][0] >= RATE_WINDOW:
            self.history.popleft()

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
        speeds: dict[str, float] = {}
        not_up: set[str] = set()
        for nodes in self.snapshots.values():
            for n in nodes:
                speeds[n["node"]] = max(speeds.get(n["node"], 0.0), n.get("speed") or 0.0)
                if n["state"] != "up":
                    not_up.add(n["node"])
        return sum(speed for node, speed in speeds.items() if node not in not_up)

    def _texts_per_node(self, key: str = "texts") -> dict[str, int]:
        totals: Counter = Counter()
        for nodes in self.snapshots.values():
            for n in nodes:
                totals[n["node"]] += n.get(key, 0)
        return dict(totals)

    def _sample_tokens(self) -> None:
        now, totals = self.clock(), self._texts_per_node("tokens")
        if self.token_history and now - self.token_history[-1][0] < 1.0:
            self.token_history[-1] = (self.token_history[-1][0], totals)
        else:
            self.token_history.append((now, totals))
        while len(self.token_history) > 2 and now - self.token_history[1][0] >= RATE_WINDOW:
            self.token_history.popleft()

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
        merged: dict[str, dict] = {}
        states: dict[str, Counter] = {}
        sketches: dict[str, LatencySketch] = {}
        for (worker, _), nodes in self.snapshots.items():
            for n in nodes:
                row = merged.setdefault(n["node"], {
                    "node": n["node"], "model": n["model"], "digest": n.get("digest", ""),
                    "inflight": 0, "cap": 0, "texts": 0, "tokens": 0, "requests": 0,
                    "errors": Counter(),
                    "latency_counts": [0] * len(LATENCY_BUCKETS), "latency_sum": 0.0,
                    "speed": 0.0,
                    "size": n.get("size"), "size_vram": n.get("size_vram")})
                for key in ("inflight", "texts", "requests"):
                    row[key] += n[key]
                row["tokens"] += n.get("tokens", 0)
                row["cap"] = max(row["cap"], n["cap"])
                row["errors"].update(n["errors"])
                row["latency_counts"] = [a + b for a, b in zip(row["latency_counts"],
                                                               n["latency_counts"])]
                row["latency_sum"] += n.get("latency_sum", 0.0)
                sketches.setdefault(n["node"], LatencySketch()).merge(
                    LatencySketch.from_wire(n["latency_sketch"]))
                row["speed"] = max(row["speed"], n.get("speed") or 0.0)
                states.setdefault(n["node"], Counter())[n["state"]] += 1
        rates = self.rates()
        token_rates = self.rates(self.token_history)
        out = []
        for node, row in merged.items():
            seen = states[node]
            row["state"] = "up" if seen.keys() == {"up"} else ", ".join(
                f"{state} ({count} of {sum(seen.values())} workers)" for state, count in seen.items())
            row["cap"] = self.caps.get(node, row["cap"])
            row["rate"] = rates.get(node, 0.0)
            row["token_rate"] = token_rates.get(node, 0.0)
            row["p50"] = sketches[node].quantile(0.5)
            row["p95"] = sketches[node].quantile(0.95)
            row["errors"] = dict(row["errors"])
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
                "row_errors": sum(j.get("row_errors", 0) for j in jobs),
                "jobs": jobs,
                "events": [{"time": t, "text": x} for t, x in self.events],
                "series": {"time": times, "rate": rates, "capacity": capacities}}
