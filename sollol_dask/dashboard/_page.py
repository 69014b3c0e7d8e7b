"""The ``/sollol`` Bokeh page: fleet table, throughput (the monitor's last ten minutes,
then live), jobs, recent events."""

from __future__ import annotations

import bisect
import html
import time

from bokeh.layouts import column, row
from bokeh.models import ColumnDataSource, Div, FactorRange, Range1d
from bokeh.plotting import figure
from bokeh.server.tornado import BokehTornado
from distributed.dashboard.core import BokehApplication
from tornado.ioloop import IOLoop

from ._names import MONITOR_NAME, PAGE
from ._status import render_table
from ._view import HISTORY_SECONDS

REFRESH_MS = 1000
SERIES_POINTS = HISTORY_SECONDS + 60  # the chart keeps as much as the monitor, a little more


def fleet_doc(scheduler, extra, doc) -> None:
    """Bokeh document for one browser tab; reads the scheduler's FleetMonitor."""
    doc.title = "sollol-dask fleet"
    header = Div(text="<h2>sollol-dask fleet</h2>")
    table = Div(text="<p>waiting for the first report from a worker...</p>", name="sollol-fleet")
    jobs = Div(text="", name="sollol-jobs")
    events = Div(text="", name="sollol-events")
    fleet_source = ColumnDataSource({"t": [], "rate": [], "capacity": []},
                                    name="sollol-throughput-data")
    nodes_source = ColumnDataSource({"node": [], "rate": []}, name="sollol-per-node-data")
    # Axes from zero: a rate axis that starts at 80 makes 85 look like twice 82.
    throughput = figure(title="fleet texts/s (line) and measured capacity (dashed)",
                        name="sollol-throughput", x_axis_type="datetime",
                        y_range=Range1d(0, 1), height=260, width=560,
                        tools="", toolbar_location=None)
    throughput.line("t", "rate", source=fleet_source, line_width=2)
    throughput.line("t", "capacity", source=fleet_source, line_dash="dashed", color="gray")
    per_node = figure(title="texts/s per node", name="sollol-per-node",
                      x_range=Range1d(0, 1), y_range=FactorRange(), height=260, width=440,
                      tools="", toolbar_location=None)
    per_node.hbar(y="node", right="rate", height=0.6, source=nodes_source)

    last_shown = [float("-inf")]  # time of the newest point sent to this tab

    def update() -> None:
        monitor = scheduler.plugins.get(MONITOR_NAME)
        if monitor is None:
            return
        data = monitor.fleet()
        if data["nodes"]:
            table.text = render_table(data["nodes"])
        jobs.text = render_jobs(data["jobs"])
        events.text = render_events(data["events"])
        series = data["series"]
        # A new tab gets the whole series; then only the points it has not got yet.
        first = bisect.bisect_right(series["time"], last_shown[0])
        if first < len(series["time"]):
            last_shown[0] = series["time"][-1]
            fleet_source.stream({"t": [t * 1000 for t in series["time"][first:]],
                                 "rate": series["rate"][first:],
                                 "capacity": series["capacity"][first:]},
                                rollover=SERIES_POINTS)
        throughput.y_range.end = axis_end([*series["rate"], *series["capacity"]])
        names = [r["node"] for r in data["nodes"]]
        rates = [r["rate"] for r in data["nodes"]]
        per_node.y_range.factors = names
        per_node.x_range.end = axis_end(rates)
        nodes_source.data = {"node": names, "rate": rates}

    update()
    doc.add_periodic_callback(update, REFRESH_MS)
    doc.add_root(column(header, table, row(throughput, per_node), jobs, events,
                        sizing_mode="stretch_width"))


def axis_end(values: list[float]) -> float:
    """The top of an axis that starts at zero: a little above the largest value, 1 while
    everything is zero (not Bokeh's -1..1 for an empty or flat range)."""
    top = max(values, default=0.0)
    return top * 1.1 if top > 0 else 1.0


def render_jobs(jobs: list[dict]) -> str:
    if not jobs:
        return "<h3>jobs</h3><p>no embedding job yet</p>"
    lines = []
    for j in jobs[-10:]:
        status = "done" if j["finished"] else (
            f"ETA {j['eta']:.0f} s" if j["eta"] is not None else "running")
        unit = j["unit"]
        done = (f"{j['done_rows']} / {j['rows']} {unit}" if j["rows"] is not None
                else f"{j['done_rows']} {unit}")
        errors = f", {j['row_errors']} row errors (see _errors)" if j.get("row_errors") else ""
        lines.append(f"<li class='sollol-job'>{html.escape(j['label'])}: {done}, "
                     f"{j['done_parts']} / {j['parts']} partitions, "
                     f"{j['rate']:.0f} {unit}/s{errors}, {status}</li>")
    return "<h3>jobs</h3><ul>" + "".join(lines) + "</ul>"


def render_events(events: list[dict]) -> str:
    items = "".join(f"<li>{time.strftime('%H:%M:%S', time.localtime(e['time']))} "
                    f"{html.escape(e['text'])}</li>" for e in events[-15:][::-1])
    return f"<h3>recent errors and state changes</h3><ul>{items or '<li>none</li>'}</ul>"


def mount_page(scheduler) -> bool:
    """Serve ``/sollol`` on this scheduler's dashboard, unless it already is."""
    apps = getattr(scheduler.http_application, "applications", None)
    if apps is None:
        return False
    if any(isinstance(app, BokehTornado) and PAGE in app.app_paths for app in apps):
        return False  # the preload module put it in the dashboard (and its menu)
    bokeh_app = BokehApplication({PAGE: fleet_doc}, scheduler)
    scheduler.http_application.add_application(bokeh_app)
    bokeh_app.initialize(IOLoop.current())
    return True
