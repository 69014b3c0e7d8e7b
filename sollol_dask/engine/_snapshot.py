"""A router's per-node counters and state as typed rows: for reports, ``status``, the
dashboard (sent to the scheduler as msgpack, so ``to_dict``). Never holds header values."""

from __future__ import annotations

import dataclasses

from .._node import Node
from ..policy._balancer import SlotBalancer
from ..policy._identity import NodeInfo


@dataclasses.dataclass(frozen=True)
class NodeRow:
    node: str
    api: str
    model: str
    digest: str  # the first 12 characters, "" when not known
    state: str  # the balancer's Health value
    reason: str
    cap: int
    inflight: int
    max_inflight_seen: int
    requests: int
    texts: int
    tokens: int  # as the node reported them for its successful requests
    errors: dict[str, int]  # failure kind -> count
    speed: float | None  # texts/s with cap requests in flight, once measured
    latency_counts: list[int]  # per policy._metrics.LATENCY_BUCKETS
    latency_sum: float
    latency_sketch: dict  # policy._metrics.LatencySketch.to_wire(): the p50/p95 shown
    size: int | None  # bytes of the loaded model (Ollama /api/ps)
    size_vram: int | None
    overtaken: int = 0  # batches a copy elsewhere finished first (slow or hung node)

    def to_dict(self) -> dict:
        # Shallow: the fields are fresh copies already (a deep ``asdict`` of 1,024 rows
        # each second was a tenth of a busy worker's CPU).
        return {f.name: getattr(self, f.name) for f in _FIELDS}


_FIELDS = dataclasses.fields(NodeRow)


def snapshot(balancer: SlotBalancer, nodes: dict[str, Node], infos: dict[str, NodeInfo],
             model: str) -> list[NodeRow]:
    rows = []
    for s in balancer.nodes.values():
        info = infos.get(s.name)
        rows.append(NodeRow(
            node=s.name, api=nodes[s.name].api, model=model,
            digest=(info.digest or "")[:12] if info else "", state=s.health.value,
            reason=s.reason, cap=s.cap, inflight=s.inflight,
            max_inflight_seen=s.max_inflight_seen, requests=s.requests, texts=s.texts,
            tokens=s.tokens,
            errors=dict(s.errors), speed=s.speed, latency_counts=list(s.latency_counts),
            latency_sum=s.latency_sum, latency_sketch=s.latency.to_wire(),
            size=info.size if info else None,
            size_vram=info.size_vram if info else None, overtaken=s.overtaken))
    return rows
