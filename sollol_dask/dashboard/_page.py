"""The ``/sollol`` Bokeh page: the fleet's aggregates, failing and slowest nodes,
throughput (the monitor's last ten minutes, then live), the node table (sorted, paged),
jobs, recent events."""

from __future__ import annotations

import bisect
import html
import time

from bokeh.layouts import column, row
from bokeh.models import (
    Button,
    ColumnDataSource,
    Div,
    FactorRange,
    Range1d,
    Select,
    TextInput,
)
from bokeh.plotting import figure
from bokeh.server.tornado import BokehTornado
from distributed.dashboard.core import BokehApplication
from tornado.ioloop import IOLoop

from ._names import MONITOR_NAME, PAGE
from ._status import COLUMNS, render_table, seconds_text
from ._summary import (
    PAGE_SIZE,
    SHORT_LIST,
    aggregate_line,
    failing,
    median_speed,
    page_label,
    page_of,
    slowest,
    sort_rows,
)
from ._view import HISTORY_SECONDS

REFRESH_MS = 1000
CHART_NODES = 20  # bars in the per-node chart: readable in its 300 pixels
SERIES_POINTS = HISTORY_SECONDS + 60  # the chart keeps as much as the monitor, a little more


def fleet_doc(scheduler, extra, doc) -> None:
    """Bokeh document for one browser tab; reads the scheduler's FleetMonitor.

    Aggregates come first, then the failing and the slowest nodes, the charts, and the
    node table: sorted and cut into pages on the server, so a tab receives 50 rows
    whatever the fleet's size. Sort order, filter and page are this tab's own."""
    doc.title = "sollol-dask fleet"
    header = Div(text="<h2>sollol-dask fleet</h2>")
    summary = Div(text="", name="sollol-summary")
    failing_list = Div(text="", name="sollol-failing", width=560)
    slowest_list = Div(text="", name="sollol-slowest", width=560)
    table = Div(text="<p>waiting for the first report from a worker...</p>", name="sollol-fleet")
    jobs = Div(text="", name="sollol-jobs")
    events = Div(text="", name="sollol-events")
    sort = Select(title="sort by", value="node", options=list(COLUMNS), name="sollol-sort",
                  width=160)
    order = Select(title="order", value="ascending", options=["ascending", "descending"],
                   name="sollol-order", width=120)
    search = TextInput(title="node contains", value="", name="sollol-filter", width=220)
    previous = Button(label="< previous", name="sollol-previous", width=100)
    following = Button(label="next >", name="sollol-next", width=100)
    where = Div(text="", name="sollol-page")
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
    per_node = figure(title=f"texts/s per node (the table's first {CHART_NODES})",
                      name="sollol-per-node",
                      x_range=Range1d(0, 1), y_range=FactorRange(), height=300, width=440,
                      tools="", toolbar_location=None)
    per_node.hbar(y="node", right="rate", height=0.6, source=nodes_source)

    last_shown = [float("-inf")]  # time of the newest point sent to this tab
    view = {"data": None, "page": 0}  # this tab's last data and table page

    def show_table() -> None:
        data = view["data"]
        if data is None or not data["nodes"]:
            return
        rows = data["nodes"]
        if search.value.strip():
            rows = [r for r in rows if search.value.strip().lower() in r["node"].lower()]
        rows = sort_rows(rows, sort.value, order.value == "descending")
        shown, view["page"] = page_of(rows, view["page"])
        where.text = page_label(view["page"], len(rows))
        previous.disabled = view["page"] == 0
        following.disabled = (view["page"] + 1) * PAGE_SIZE >= len(rows)
        table.text = render_table(shown, sorted_by=(sort.value, order.value == "descending"))
        charted = shown[:CHART_NODES][::-1]  # factors go up the axis: first row on top
        names = [r["node"] for r in charted]
        rates = [r["rate"] for r in charted]
        per_node.y_range.factors = names
        per_node.x_range.end = axis_end(rates)
        nodes_source.data = {"node": names, "rate": rates}

    def turn(step: int) -> None:
        view["page"] += step
        show_table()

    def restart(attr, old, new) -> None:  # a new order or filter starts at its first page
        view["page"] = 0
        show_table()

    for widget in (sort, order, search):
        widget.on_change("value", restart)
    previous.on_click(lambda: turn(-1))
    following.on_click(lambda: turn(1))

    def update() -> None:
        monitor = scheduler.plugins.get(MONITOR_NAME)
        if monitor is None:
            return
        data = view["data"] = monitor.fleet()
        summary.text = render_summary(data)
        failing_list.text = render_failing(data["nodes"])
        slowest_list.text = render_slowest(data["nodes"])
        show_table()
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

    update()
    doc.add_periodic_callback(update, REFRESH_MS)
    controls = row(sort, order, search, column(where, row(previous, following)))
    doc.add_root(column(header, summary, row(failing_list, slowest_list), row(throughput, per_node),
                        controls, table, jobs, events, sizing_mode="stretch_width"))


def render_summary(data: dict) -> str:
    if not data["nodes"]:
        return "<p class='sollol-aggregate'>no node reported yet</p>"
    return f"<p class='sollol-aggregate'><b>{html.escape(aggregate_line(data))}</b></p>"


def render_failing(rows: list[dict]) -> str:
    bad = failing(rows)
    if not bad:
        return "<h3>failing nodes</h3><p>none: every node is up, no errors</p>"
    items = []
    for r in bad[:SHORT_LIST]:
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(r["errors"].items())) or "no errors"
        reason = f" ({r['reason'][:120]})" if r.get("reason") else ""
        items.append(f"<li class='sollol-failing-node'>{html.escape(r['node'])}: "
                     f"{html.escape(r['state'] + reason)}; {html.escape(errors)}</li>")
    more = (f"<li>and {len(bad) - SHORT_LIST} more: sort the table by state or errors</li>"
            if len(bad) > SHORT_LIST else "")
    return f"<h3>failing nodes ({len(bad)})</h3><ul>{''.join(items)}{more}</ul>"


def render_slowest(rows: list[dict]) -> str:
    slow, median = slowest(rows), median_speed(rows)
    title = "<h3>slowest nodes (measured texts/s at full in-flight cap)</h3>"
    if median is None:
        return title + "<p>no node measured yet</p>"
    if not slow:
        return title + (f"<p>none below 90% of the fleet median, {median:.1f} texts/s</p>")
    items = "".join(
        f"<li class='sollol-slow-node'>{html.escape(r['node'])}: {r['speed']:.1f} texts/s "
        f"measured, {r['rate']:.1f} texts/s now, p95 {seconds_text(r['p95'])}</li>"
        for r in slow)
    return f"{title}<p>fleet median {median:.1f} texts/s</p><ul>{items}</ul>"


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
