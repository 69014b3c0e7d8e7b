"""``sollol_*`` series on the scheduler's ``/metrics`` (prometheus_client's registry):
the fleet's aggregates, then per-node series."""

from __future__ import annotations

import math

from prometheus_client.core import (
    REGISTRY,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

from ..policy._metrics import LATENCY_BUCKETS

_registered = None


class FleetCollector:
    def __init__(self, monitor) -> None:
        self.monitor = monitor

    def collect(self):
        data = self.monitor.fleet()
        labels = ["node", "model"]
        texts = CounterMetricFamily("sollol_texts", "Texts embedded", labels=labels)
        tokens = CounterMetricFamily("sollol_tokens", "Tokens the node reported processing "
                                     "(Ollama prompt_eval_count, OpenAI usage)", labels=labels)
        token_rate = GaugeMetricFamily("sollol_tokens_per_second", "Recent token throughput",
                                       labels=labels)
        row_errors = CounterMetricFamily(
            "sollol_row_errors", "Rows of parquet jobs left without a vector for a reason of "
            "their own (listed in the output's _errors)")
        row_errors.add_metric([], data.get("row_errors", 0))
        requests = CounterMetricFamily("sollol_requests", "Embedding requests answered",
                                       labels=labels)
        errors = CounterMetricFamily("sollol_errors", "Failed requests by kind",
                                     labels=[*labels, "kind"])
        inflight = GaugeMetricFamily("sollol_inflight", "Requests in flight", labels=labels)
        cap = GaugeMetricFamily("sollol_inflight_cap", "Cluster-wide in-flight cap",
                                labels=labels)
        rate = GaugeMetricFamily("sollol_texts_per_second", "Recent throughput", labels=labels)
        latency = HistogramMetricFamily("sollol_request_seconds",
                                        "Latency of successful requests", labels=labels)
        for row in data["nodes"]:
            key = [row["node"], row["model"]]
            texts.add_metric(key, row["texts"])
            tokens.add_metric(key, row.get("tokens", 0))
            token_rate.add_metric(key, row.get("token_rate", 0.0))
            requests.add_metric(key, row["requests"])
            for kind, count in row["errors"].items():
                errors.add_metric([*key, kind], count)
            inflight.add_metric(key, row["inflight"])
            cap.add_metric(key, row["cap"])
            rate.add_metric(key, row["rate"])
            cumulative, buckets = 0, []
            for bound, count in zip(LATENCY_BUCKETS, row["latency_counts"]):
                cumulative += count
                buckets.append(("+Inf" if math.isinf(bound) else str(bound), cumulative))
            latency.add_metric(key, buckets, sum_value=row["latency_sum"])
        # Fleet-wide figures first: with 1,000 nodes nobody wants to sum 1,000 series.
        fleet_rate = GaugeMetricFamily("sollol_fleet_texts_per_second",
                                       "Recent throughput of the whole fleet")
        fleet_rate.add_metric([], data["fleet_rate"])
        capacity = GaugeMetricFamily("sollol_fleet_capacity_texts_per_second",
                                     "Measured texts/s of the nodes every worker sees up")
        capacity.add_metric([], data.get("capacity", 0.0))
        states = GaugeMetricFamily("sollol_nodes", "Nodes by state (up, or the state most "
                                   "workers see a node in)", labels=["state"])
        for state, count in data.get("states", {}).items():
            states.add_metric([state], count)
        yield from (fleet_rate, capacity, states)
        yield from (texts, requests, errors, inflight, cap, rate, latency, tokens, token_rate,
                    row_errors)


def register_collector(monitor) -> None:
    """Register (or re-point) the collector; one per process, whatever restarts."""
    global _registered
    if _registered is not None:
        _registered.monitor = monitor
        return
    _registered = FleetCollector(monitor)
    REGISTRY.register(_registered)
