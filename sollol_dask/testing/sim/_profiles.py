"""Speed profiles of simulated nodes: the time model of a real Ollama or llama.cpp node.

A request takes ``request_overhead`` plus, for each input, ``per_input + per_token x
tokens`` seconds of slot time. Ollama runs embedding models with one FIFO slot; llama.cpp
with ``-np N`` has N slots working at once. Rates quoted are for 64-token inputs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from ._vectors import count_tokens


@dataclasses.dataclass(frozen=True)
class SimProfile:
    name: str
    per_input: float
    per_token: float
    request_overhead: float
    slots: int = 1
    load_seconds: float = 0.0
    context_length: int = 2048

    def service_seconds(self, texts: Sequence[str], slowdown: float = 1.0) -> float:
        """Slot time of one request with these texts."""
        work = sum(self.per_input + self.per_token * count_tokens(t) for t in texts)
        return (self.request_overhead + work) * slowdown

    def capacity(self, texts: Sequence[str], batch_size: int) -> float:
        """Best possible texts/s of one node on ``texts`` sent in batches of ``batch_size``."""
        if not texts:
            return 0.0
        batches = [texts[i:i + batch_size] for i in range(0, len(texts), batch_size)]
        seconds = sum(self.service_seconds(b) for b in batches) / self.slots
        return len(texts) / seconds if seconds else float("inf")

    def replace(self, **changes) -> SimProfile:
        return dataclasses.replace(self, **changes)


PROFILES: dict[str, SimProfile] = {
    # ~117 inputs/s: a consumer GPU running nomic-embed-text.
    "gpu": SimProfile("gpu", per_input=0.006, per_token=0.00004, request_overhead=0.005,
                      load_seconds=0.5),
    # ~15 inputs/s: a modern desktop CPU.
    "cpu": SimProfile("cpu", per_input=0.04, per_token=0.0004, request_overhead=0.01,
                      load_seconds=1.0),
    # llama-server -np 8: 8 slots of ~30 inputs/s each.
    "llamacpp": SimProfile("llamacpp", per_input=0.02, per_token=0.0002, request_overhead=0.003,
                           slots=8),
    # No model time at all: measures the client and the HTTP path.
    "instant": SimProfile("instant", per_input=0.0, per_token=0.0, request_overhead=0.0),
}
