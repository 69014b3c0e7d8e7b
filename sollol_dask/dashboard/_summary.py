"""What a fleet of hundreds of nodes reduces to, for a reader: one aggregate line, the
nodes that fail, the slowest ones, and the table sorted and cut into pages.

Pure functions of ``FleetView.data()``; the page and ``sollol-dask status`` share them.
"""

from __future__ import annotations

import math
import statistics

SHORT_LIST = 10  # nodes in the "failing" and "slowest" lists
PAGE_SIZE = 50  # table rows per page on /sollol
SLOW_BELOW = 0.9  # of the median measured speed: a "slowest nodes" entry


def aggregate_line(data: dict) -> str:
    """``1000 nodes (990 up, 8 ejected, 2 quarantined), 4812.3 texts/s of 5000 measured
    capacity (96%), 19000 tokens/s``, with row errors when a job had some."""
    states = data.get("states") or {}
    nodes = sum(states.values())
    counts = ", ".join(f"{count} {state}" for state, count in states.items())
    capacity = data.get("capacity") or 0.0
    share = f" ({data['fleet_rate'] / capacity:.0%})" if capacity > 0 else ""
    line = (f"{nodes} node{'s' if nodes != 1 else ''} ({counts}), "
            f"{data['fleet_rate']:.1f} texts/s of {capacity:.0f} measured capacity{share}, "
            f"{data.get('fleet_token_rate', 0.0):.0f} tokens/s")
    if data.get("row_errors"):
        line += f", {data['row_errors']} row errors"
    return line


def error_count(row: dict) -> int:
    return sum(row["errors"].values())


def failing(rows: list[dict]) -> list[dict]:
    """Nodes not up (on some worker), then nodes with errors: most errors first."""
    bad = [r for r in rows if r["health"] != "up" or r["errors"]]
    return sorted(bad, key=lambda r: (r["health"] == "up", -error_count(r), r["node"]))


def slowest(rows: list[dict], count: int = SHORT_LIST) -> list[dict]:
    """The up nodes measured slower than ``SLOW_BELOW`` of the fleet's median speed
    (texts/s at their full in-flight cap), slowest first. A fleet of equals has none:
    a list of nodes at the median would send a reader looking for nothing."""
    median = median_speed(rows)
    if median is None:
        return []
    slow = [r for r in rows if r["health"] == "up" and r.get("speed")
            and r["speed"] < SLOW_BELOW * median]
    return sorted(slow, key=lambda r: (r["speed"], r["node"]))[:count]


def median_speed(rows: list[dict]) -> float | None:
    speeds = [r["speed"] for r in rows if r["health"] == "up" and r.get("speed")]
    return statistics.median(speeds) if speeds else None


def _last(value):  # sort missing figures (no request yet) after every measured one
    return math.inf if value is None else value


# The table's columns a reader can sort by, and what each sorts on.
SORT_KEYS = {
    "node": lambda r: r["node"],
    "model": lambda r: r["model"],
    "state": lambda r: (r["health"] != "up", r["health"]),
    "in flight / cap": lambda r: (r["inflight"], r["cap"]),
    "texts/s": lambda r: r["rate"],
    "texts": lambda r: r["texts"],
    "tokens/s": lambda r: r.get("token_rate") or 0.0,
    "tokens": lambda r: r.get("tokens", 0),
    "p50": lambda r: _last(r["p50"]),
    "p95": lambda r: _last(r["p95"]),
    "memory": lambda r: r.get("size") or 0,
    "errors": error_count,
}


def sort_rows(rows: list[dict], column: str, descending: bool = False) -> list[dict]:
    """Rows sorted by a column (ties by node name, always ascending)."""
    key = SORT_KEYS[column]
    by_name = sorted(rows, key=lambda r: r["node"])
    return sorted(by_name, key=key, reverse=descending)


def page_of(rows: list[dict], page: int, size: int = PAGE_SIZE) -> tuple[list[dict], int]:
    """The rows of page ``page`` (0-based, clipped to the pages there are) and that page."""
    last = max(0, (len(rows) - 1) // size)
    page = min(max(page, 0), last)
    return rows[page * size:(page + 1) * size], page


def page_label(page: int, total: int, size: int = PAGE_SIZE) -> str:
    """``nodes 51-100 of 1000 (page 2 of 20)``."""
    if total == 0:
        return "no nodes"
    first, last = page * size + 1, min(total, (page + 1) * size)
    pages = (total - 1) // size + 1
    return f"nodes {first}-{last} of {total} (page {page + 1} of {pages})"
