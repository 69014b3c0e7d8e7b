"""The ``/sollol`` Bokeh page: fleet table, live throughput, jobs, recent events."""

from __future__ import annotations

import html
import time

from bokeh.layouts import column, row
from bokeh.models import ColumnDataSource, Div
from bokeh.plotting import figure
from bokeh.server.tornado import BokehTornado
from distributed.dashboard.core import BokehApplication
from tornado.ioloop import IOLoop

from ._names import MONITOR_NAME, PAGE
from ._status import render_table

REFRESH_MS = 1000


def fleet_doc(scheduler, extra, doc) -> None:
    """Bokeh document for one browser tab; reads the scheduler's FleetMonitor."""
    doc.title = "sollol-dask fleet"
    header = Div(text="<h2>sollol-dask fleet</h2>")
    table = Div(text="<p>waiting for the first report from a worker...</p>", name="sollol-fleet")
    jobs = Div(text="", name="sollol-jobs")
    events = Div(text="", name="sollol-events")
    fleet_source = ColumnDataSource({"t": [], "rate": [], "capacity": []})
    nodes_source = ColumnDataSource({"node": [], "rate": []})
    throughput = figure(title="fleet texts/s (line) and measured capacity (dashed)",
                        x_axis_type="datetime", height=260, width=560,
                        tools="", toolbar_location=None)
    throughput.line("t", "rate", source=fleet_source, line_width=2)
    throughput.line("t", "capacity", source=fleet_source, line_dash="dashed", color="gray")
    per_node = figure(title="texts/s per node", y_range=[], height=260, width=440,
                      tools="", toolbar_location=None)
    per_node.hbar(y="node", right="rate", height=0.6, source=nodes_source)

    def update() -> None:
        monitor = scheduler.plugins.get(MONITOR_NAME)
        if monitor is None:
            return
        data = monitor.fleet()
        if data["nodes"]:
            table.text = render_table(data["nodes"])
        jobs.text = render_jobs(data["jobs"])
        events.text = render_events(data["events"])
        fleet_source.stream({"t": [time.time() * 1000], "rate": [data["fleet_rate"]],
                             "capacity": [data["capacity"]]}, rollover=600)
        names = [r["node"] for r in data["nodes"]]
        per_node.y_range.factors = names
        nodes_source.data = {"node": names, "rate": [r["rate"] for r in data["nodes"]]}

    update()
    doc.add_periodic_callback(update, REFRESH_MS)
    doc.add_root(column(header, table, row(throughput, per_node), jobs, events,
                        sizing_mode="stretch_width"))


def render_jobs(jobs: list[dict]) -> str:
    if not jobs:
        return "<h3>jobs</h3><p>no parquet job yet</p>"
    lines = []
    for j in jobs[-10:]:
        status = "done" if j["finished"] else (
            f"ETA {j['eta']:.0f} s" if j["eta"] is not None else "starting")
        errors = f", {j['row_errors']} row errors (see _errors)" if j.get("row_errors") else ""
        lines.append(f"<li>{html.escape(j['output'])}: {j['done_rows']} / {j['rows']} rows, "
                     f"{j['rate']:.0f} rows/s{errors}, {status}</li>")
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
