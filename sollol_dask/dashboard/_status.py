"""``FleetStatus``: the fleet table for Jupyter (HTML) and terminals (text); no Bokeh needed."""

from __future__ import annotations

import html

from ._names import MONITOR_NAME
from ._view import FleetView


class FleetStatus:
    def __init__(self, data: dict, source: str) -> None:
        self.data = data
        self.source = source  # "cluster <address>" or "this process"

    @classmethod
    def from_scheduler(cls, client) -> FleetStatus:
        def fleet(dask_scheduler, name=MONITOR_NAME):
            monitor = dask_scheduler.plugins.get(name)
            return None if monitor is None else monitor.fleet()

        data = client.run_on_scheduler(fleet)
        if data is None:
            data = FleetView().data()
        return cls(data, f"cluster {client.scheduler.address}")

    @classmethod
    def from_router(cls, router) -> FleetStatus:
        view = FleetView()
        view.update("local", "local", router.snapshot())
        return cls(view.data(), "this process")

    @property
    def nodes(self) -> list[dict]:
        return self.data["nodes"]

    def __str__(self) -> str:
        if not self.nodes:
            return f"sollol-dask fleet ({self.source}): no embedding activity reported yet"
        header = f"{'node':<30} {'state':<10} {'in flight':>9} {'texts/s':>8} {'texts':>9} " \
                 f"{'p50':>7} {'p95':>7} errors"
        lines = [f"sollol-dask fleet ({self.source}), {self.data['fleet_rate']:.1f} texts/s, "
                 f"{self.data.get('fleet_token_rate', 0.0):.0f} tokens/s"
                 + (f", {self.data['row_errors']} row errors"
                    if self.data.get("row_errors") else ""),
                 header]
        for r in self.nodes:
            errors = ", ".join(f"{k}: {v}" for k, v in sorted(r["errors"].items())) or "0"
            p50 = "-" if r["p50"] is None else f"{r['p50']:g}s"
            p95 = "-" if r["p95"] is None else f"{r['p95']:g}s"
            lines.append(f"{r['node']:<30} {r['state']:<10} {r['inflight']:>4} / {r['cap']:<2} "
                         f"{r['rate']:>8.1f} {r['texts']:>9} {p50:>7} {p95:>7} {errors}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        title = f"<b>sollol-dask fleet</b> ({self.source})"
        if not self.nodes:
            return title + ": no embedding activity reported yet"
        return title + render_table(self.nodes)


def _num(value, fmt: str = "{:.0f}") -> str:
    return "-" if value is None else fmt.format(value)


def _seconds(value) -> str:
    if value is None:
        return "-"
    return "inf" if value == float("inf") else f"{value:g} s"


def render_table(rows: list[dict]) -> str:
    head = ("<table class='sollol-fleet' border='1' cellpadding='4' style='border-collapse:"
            "collapse'><tr><th>node</th><th>model</th><th>digest</th><th>state</th>"
            "<th>in flight / cap</th><th>texts/s</th><th>texts</th><th>tokens/s</th>"
            "<th>tokens</th><th>p50</th><th>p95</th>"
            "<th>errors</th><th>VRAM</th></tr>")
    body = []
    for r in rows:
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(r["errors"].items())) or "0"
        vram = "-" if not r.get("size") else f"{(r['size_vram'] or 0) / 2**20:.0f} / {r['size'] / 2**20:.0f} MiB"
        cells = [r["node"], r["model"], r["digest"], r["state"], f"{r['inflight']} / {r['cap']}",
                 _num(r["rate"], "{:.1f}"), str(r["texts"]), _num(r.get("token_rate")),
                 str(r.get("tokens", 0)), _seconds(r["p50"]),
                 _seconds(r["p95"]), errors, vram]
        body.append("<tr class='sollol-node'>" + "".join(
            f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    return head + "".join(body) + "</table>"
