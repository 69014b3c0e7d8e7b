"""Shared helpers: sim fleets as processes, capacity arithmetic, result files."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

from sollol_dask._settings import RouterSettings
from sollol_dask.testing import PROFILES, SimProcess

RESULTS = Path(__file__).parent / "results"
MODEL = "nomic-embed-text"


def texts(n: int, words: int = 48, tag: str = "t") -> list[str]:
    """Unique texts of about ``words`` words (~64 tokens at 4 characters per token)."""
    return [f"{tag}{i} " + " ".join(f"w{(i * 31 + k) % 997}" for k in range(words // 2))
            for i in range(n)]


@contextlib.contextmanager
def fleet(*profiles: str, extra: tuple[str, ...] = ()):
    """Sim nodes as separate processes (so they never share the client's GIL)."""
    nodes = []
    try:
        for profile in profiles:
            nodes.append(SimProcess(profile, "--load-seconds", "0", *extra))
        yield nodes
    finally:
        for node in nodes:
            node.stop()


# The largest request sollol_dask sends by default: a node's best rate is with requests
# this large (its per-request overhead paid least often), whatever sizes a method uses.
LARGEST_BATCH = RouterSettings.__dataclass_fields__["batch_size"].default


def capacity(profiles, items: list[str], batch_size: int = LARGEST_BATCH) -> float:
    """The fleet's exact physical limit on ``items``: sum of each node's best rate."""
    return sum(PROFILES[p].capacity(items, batch_size) for p in profiles)


def timed(fn):
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def save(name: str, result: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=1, default=float))
    return path
