"""``FleetStatus``: the fleet table for Jupyter (HTML) and terminals (text); no Bokeh needed.

An aggregate line comes first. Up to ``FULL_TABLE_UP_TO`` nodes the table lists them all;
a larger fleet shows its failing nodes and its slowest ones, and says how to see all."""

from __future__ import annotations

import html

from ._names import MONITOR_NAME
from ._summary import SHORT_LIST, aggregate_line, failing, median_speed, slowest
from ._view import FleetView

FULL_TABLE_UP_TO = 20  # nodes; past this, the failing and slowest ones (``show_all`` lists all)


class FleetStatus:
    def __init__(self, data: dict, source: str, *, show_all: bool = False) -> None:
        self.data = data
        self.source = source  # "cluster <address>" or "this process"
        self.show_all = show_all

    @classmethod
    def from_scheduler(cls, client, *, show_all: bool = False) -> FleetStatus:
        def fleet(dask_scheduler, name=MONITOR_NAME):
            monitor = dask_scheduler.plugins.get(name)
            return None if monitor is None else monitor.fleet()

        data = client.run_on_scheduler(fleet)
        if data is None:
            data = FleetView().data()
        return cls(data, f"cluster {client.scheduler.address}", show_all=show_all)

    @classmethod
    def from_router(cls, router) -> FleetStatus:
        view = FleetView()
        view.update("local", "local", router.snapshot())
        return cls(view.data(), "this process")

    @property
    def nodes(self) -> list[dict]:
        return self.data["nodes"]

    def shown(self) -> tuple[list[dict], str]:
        """The rows to list and, when they are not all, a line saying which these are."""
        rows = self.nodes
        if self.show_all or len(rows) <= FULL_TABLE_UP_TO:
            return rows, ""
        bad = failing(rows)
        picked = {r["node"] for r in bad[:SHORT_LIST]}
        slow = [r for r in slowest(rows, SHORT_LIST + len(picked))
                if r["node"] not in picked][:SHORT_LIST]
        if not picked and not slow:  # nothing failing, nothing measured yet
            return rows[:FULL_TABLE_UP_TO], (
                f"{FULL_TABLE_UP_TO} of {len(rows)} nodes shown (by name: none failing, none "
                "measured below 90% of the median speed). --all lists every node.")
        median = median_speed(rows)
        note = (f"{len(picked) + len(slow)} of {len(rows)} nodes shown: "
                f"{len(picked)} failing (not up, or with errors; {len(bad)} in all), then the "
                f"{len(slow)} slowest (measured texts/s below 90% of the median"
                + (f", {median:.1f}" if median is not None else "")
                + "). --all lists every node.")
        return bad[:SHORT_LIST] + slow, note

    def __str__(self) -> str:
        if not self.nodes:
            return f"sollol-dask fleet ({self.source}): no embedding activity reported yet"
        rows, note = self.shown()
        lines = [f"sollol-dask fleet ({self.source}): {aggregate_line(self.data)}"]
        lines += _columns([list(COLUMNS)] + [_cells(r) for r in rows])
        return "\n".join(lines + ([note] if note else []))

    def __repr__(self) -> str:  # a REPL shows the table, not an object address
        return str(self)

    def _repr_html_(self) -> str:
        title = f"<b>sollol-dask fleet</b> ({self.source})"
        if not self.nodes:
            return title + ": no embedding activity reported yet"
        rows, note = self.shown()
        return (f"{title}: {html.escape(aggregate_line(self.data))}" + render_table(rows)
                + (f"<p>{html.escape(note)}</p>" if note else ""))


def _num(value, fmt: str = "{:.0f}") -> str:
    return "-" if value is None else fmt.format(value)


def seconds_text(value: float | None) -> str:
    """A latency as read: two significant digits, trailing zero kept so that a measured
    second does not look like a bucket edge ("0.31 s", "1.0 s", "14 s", "8.5 ms")."""
    if value is None:
        return "-"
    if value == float("inf"):
        return "inf"
    value, unit = (value * 1000, "ms") if value < 0.01 else (value, "s")
    # whole units from 10 up (9.96 too: "10 s", not "10. s")
    return f"{value:.0f} {unit}" if value >= 9.95 else f"{value:#.2g} {unit}"


def memory_text(size: int | None, size_vram: int | None) -> str:
    """Where the node holds the model (Ollama's /api/ps): "GPU 286 MiB", "CPU 286 MiB",
    or split, "GPU 200 MiB + CPU 86 MiB"; "-" when the server does not say."""
    if not size:
        return "-"
    vram = min(size_vram or 0, size)
    if vram == size:
        return f"GPU {_mib(size)}"
    if vram == 0:
        return f"CPU {_mib(size)}"
    return f"GPU {_mib(vram)} + CPU {_mib(size - vram)}"


def _mib(size: int) -> str:
    return f"{size / 2**20:.0f} MiB"


# The fleet table's columns, in the page's and the terminal's order.
COLUMNS = ("node", "model", "digest", "state", "in flight / cap", "texts/s", "texts",
           "tokens/s", "tokens", "p50", "p95", "memory", "errors")


def _cells(r: dict) -> list[str]:
    errors = ", ".join(f"{k}: {v}" for k, v in sorted(r["errors"].items())) or "0"
    return [r["node"], r["model"], r["digest"] or "-", r["state"],
            f"{r['inflight']} / {r['cap']}", _num(r["rate"], "{:.1f}"), str(r["texts"]),
            _num(r.get("token_rate")), str(r.get("tokens", 0)), seconds_text(r["p50"]), seconds_text(r["p95"]),
            memory_text(r.get("size"), r.get("size_vram")), errors]


def _columns(rows: list[list[str]]) -> list[str]:
    """Rows of cells as aligned text; numbers right-aligned, the last column left ragged."""
    numeric = {"in flight / cap", "texts/s", "texts", "tokens/s", "tokens", "p50", "p95"}
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for row in rows:
        cells = [cell.rjust(w) if name in numeric else cell.ljust(w)
                 for cell, w, name in zip(row, widths, COLUMNS)]
        lines.append("  ".join([*cells, row[-1]]))
    return lines


def render_table(rows: list[dict], sorted_by: tuple[str, bool] | None = None) -> str:
    """The rows as an HTML table; ``sorted_by`` (column, descending) marks that header."""
    def title(name: str) -> str:
        if sorted_by is None or sorted_by[0] != name:
            return html.escape(name)
        return f"{html.escape(name)} {'&#9660;' if sorted_by[1] else '&#9650;'}"

    head = ("<table class='sollol-fleet' border='1' cellpadding='4' style='border-collapse:"
            "collapse'><tr>" + "".join(f"<th>{title(name)}</th>" for name in COLUMNS)
            + "</tr>")
    body = []
    for r in rows:
        body.append("<tr class='sollol-node'>" + "".join(
            f"<td>{html.escape(c)}</td>" for c in _cells(r)) + "</tr>")
    return head + "".join(body) + "</table>"
