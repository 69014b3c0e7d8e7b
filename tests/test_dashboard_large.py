"""The /sollol page, /metrics and `sollol-dask status` with 1,000 nodes reported by 4
workers: aggregates first, the failing and slowest nodes, a sorted and paged table.

The fleet is ``sollol_dask.testing.fleet_reports`` (its docstring lists the figures):
997 nodes up doing 40 texts/s each, 2 quarantined, 1 ejected by one worker, 1 with an
error, 5 slow ones measured at 5-9 texts/s against a median of 50.
"""

from __future__ import annotations

import re
import time

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from sollol_dask.dashboard import MONITOR_NAME, FleetMonitor, FleetStatus
from sollol_dask.testing.fleet_reports import large_fleet_view, node_name

from .conftest import REPO, FakeClock
from .test_dashboard import _chrome, _open_page, wait_for

ARTIFACTS = REPO / "test-artifacts"
AGGREGATE = ("1000 nodes (997 up, 2 quarantined, 1 ejected), 39920.0 texts/s of 49635 "
             "measured capacity (80%), 159680 tokens/s")
EJECTED, ERRORING = node_name(500), node_name(700)
QUARANTINED = [node_name(600), node_name(601)]
SLOW = [node_name(i) for i in range(100, 105)]


@pytest.fixture(scope="module")
def view():
    return large_fleet_view(FakeClock())


def _table_nodes(doc) -> list[str]:
    text = doc.select_one({"name": "sollol-fleet"}).text
    return re.findall(r"<tr class='sollol-node'><td>(.*?)</td>", text)


def test_page_shows_aggregates_failing_and_slowest_nodes_first(view):
    doc, _ = _open_page(view)
    assert doc.select_one({"name": "sollol-summary"}).text == (
        f"<p class='sollol-aggregate'><b>{AGGREGATE}</b></p>")
    failing = doc.select_one({"name": "sollol-failing"}).text
    assert "<h3>failing nodes (4)</h3>" in failing
    listed = re.findall(r"<li class='sollol-failing-node'>(.*?)</li>", failing)
    assert listed == [
        f"{EJECTED}: ejected (1 of 4 workers), up (3 of 4 workers) (connection refused); "
        "connect: 3",
        f"{QUARANTINED[0]}: quarantined (4 of 4 workers) (wrong dimension 384); no errors",
        f"{QUARANTINED[1]}: quarantined (4 of 4 workers) (wrong dimension 384); no errors",
        f"{ERRORING}: up; transient: 1"]
    slowest = doc.select_one({"name": "sollol-slowest"}).text
    assert "<p>fleet median 50.0 texts/s</p>" in slowest
    slow = re.findall(r"<li class='sollol-slow-node'>(.*?): ", slowest)
    assert slow == SLOW
    assert f"<li class='sollol-slow-node'>{SLOW[0]}: 5.0 texts/s measured, 40.0 texts/s " \
           "now, p95 0.42 s</li>" in slowest


def test_table_is_paged_and_sorted_per_tab(view):
    doc, refresh = _open_page(view)
    page = doc.select_one({"name": "sollol-page"})
    by_name = sorted(node_name(i) for i in range(1000))
    assert page.text == "nodes 1-50 of 1000 (page 1 of 20)"
    assert _table_nodes(doc) == by_name[:50]
    assert "<th>node &#9650;</th>" in doc.select_one({"name": "sollol-fleet"}).text
    chart = doc.select_one({"name": "sollol-per-node-data"}).data
    assert chart["node"] == by_name[:20][::-1]  # the table's first rows, first on top

    following = doc.select_one({"name": "sollol-next"})
    previous = doc.select_one({"name": "sollol-previous"})
    assert previous.disabled and not following.disabled
    _click(following)
    _click(following)
    assert page.text == "nodes 101-150 of 1000 (page 3 of 20)"
    assert _table_nodes(doc) == by_name[100:150]
    refresh()  # the next second's refresh keeps this tab's page
    assert _table_nodes(doc) == by_name[100:150]

    doc.select_one({"name": "sollol-sort"}).value = "errors"
    doc.select_one({"name": "sollol-order"}).value = "descending"
    assert page.text == "nodes 1-50 of 1000 (page 1 of 20)"  # a new order starts at page 1
    assert _table_nodes(doc)[:3] == [EJECTED, ERRORING, by_name[0]]  # ties: by name
    assert "<th>errors &#9660;</th>" in doc.select_one({"name": "sollol-fleet"}).text

    doc.select_one({"name": "sollol-sort"}).value = "state"
    doc.select_one({"name": "sollol-order"}).value = "ascending"
    assert _table_nodes(doc)[:4] == [by_name[0], by_name[1], by_name[2], by_name[3]]
    doc.select_one({"name": "sollol-order"}).value = "descending"
    assert _table_nodes(doc)[:3] == [QUARANTINED[0], QUARANTINED[1], EJECTED]

    doc.select_one({"name": "sollol-filter"}).value = "10.0.3."
    assert page.text == "nodes 1-50 of 250 (page 1 of 5)"
    for _ in range(10):  # past the last page: it stays on the last
        _click(following)
    assert page.text == "nodes 201-250 of 250 (page 5 of 5)" and following.disabled

    other, _ = _open_page(view)  # another tab keeps its own order and page
    assert other.select_one({"name": "sollol-page"}).text == "nodes 1-50 of 1000 (page 1 of 20)"


def _click(button) -> None:
    from bokeh.events import ButtonClick

    button._trigger_event(ButtonClick(button))


def test_metrics_lead_with_fleet_aggregates(view):
    from types import SimpleNamespace

    from sollol_dask.dashboard._prometheus import FleetCollector

    registry = CollectorRegistry()
    registry.register(FleetCollector(SimpleNamespace(fleet=view.data)))
    text = generate_latest(registry).decode()
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert lines[:5] == ["sollol_fleet_texts_per_second 39920.0",
                         "sollol_fleet_capacity_texts_per_second 49635.0",
                         'sollol_nodes{state="up"} 997.0',
                         'sollol_nodes{state="quarantined"} 2.0',
                         'sollol_nodes{state="ejected"} 1.0']
    per_node = [line for line in lines if line.startswith("sollol_texts_total{")]
    assert len(per_node) == 1000
    assert f'sollol_texts_total{{model="nomic-embed-text",node="{SLOW[0]}"}} 360.0' in per_node


def test_status_shows_the_aggregate_then_failing_and_slowest_nodes(view):
    lines = str(FleetStatus(view.data(), "this process")).splitlines()
    assert lines[0] == f"sollol-dask fleet (this process): {AGGREGATE}"
    assert re.split(r"\s{2,}", lines[1].strip())[:4] == ["node", "model", "digest", "state"]
    assert [line.split()[0] for line in lines[2:-1]] == [
        EJECTED, *QUARANTINED, ERRORING, *SLOW]
    assert lines[-1] == ("9 of 1000 nodes shown: 4 failing (not up, or with errors; 4 in "
                         "all), then the 5 slowest (measured texts/s below 90% of the median, "
                         "50.0). --all lists every node.")
    everything = str(FleetStatus(view.data(), "this process", show_all=True)).splitlines()
    assert len(everything) == 2 + 1000 and everything[2].startswith(node_name(0) + " ")


def test_status_of_a_healthy_even_fleet_lists_the_first_nodes_by_name(clock):
    from sollol_dask.dashboard import FleetView
    from sollol_dask.testing.fleet_reports import worker_report

    view = FleetView(clock=clock)
    even = [dict(r, state="up", errors={}, speed=50.0) for r in worker_report(0, 30, 1)]
    view.update("w1", "c", even)
    lines = str(FleetStatus(view.data(), "this process")).splitlines()
    assert lines[0].startswith("sollol-dask fleet (this process): 30 nodes (30 up), ")
    assert len(lines) == 2 + 20 + 1
    assert lines[-1] == ("20 of 30 nodes shown (by name: none failing, none measured below "
                         "90% of the median speed). --all lists every node.")


# -- in a real browser, on a real scheduler's dashboard -----------------------------------

def _feed_large_fleet(dask_scheduler):
    """On the scheduler: the monitor's view becomes the 1,000-node fleet."""
    monitor = dask_scheduler.plugins[MONITOR_NAME]
    monitor.view = large_fleet_view(FakeClock())
    return len(monitor.view.snapshots)


DEEP = """
const all = (selector) => {
  const found = [];
  const walk = (root) => {
    root.querySelectorAll(selector).forEach(el => found.push(el));
    root.querySelectorAll('*').forEach(el => { if (el.shadowRoot) walk(el.shadowRoot); });
  };
  walk(document);
  return found;
};
"""
SHOWN = DEEP + """
const text = (sel) => all(sel).map(el => el.textContent);
return {rows: all('tr.sollol-node').map(r => r.querySelector('td').textContent),
        aggregate: text('p.sollol-aggregate'), failing: text('li.sollol-failing-node'),
        slow: text('li.sollol-slow-node'), headers: text('table.sollol-fleet th')};
"""
CLICK_NEXT = DEEP + """
all('button').filter(b => b.textContent.trim() === 'next >')[0].click();
"""
CHOOSE = DEEP + """
const [index, value] = arguments;
const select = all('select')[index];
select.value = value;
select.dispatchEvent(new Event('input', {bubbles: true}));
select.dispatchEvent(new Event('change', {bubbles: true}));
"""


@pytest.mark.browser
def test_page_with_1000_nodes_in_a_real_browser_renders_pages_and_sorts(capsys):
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=0, processes=False, host="127.0.0.1", protocol="tcp",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        client.register_plugin(FleetMonitor(), name=MONITOR_NAME)
        assert client.run_on_scheduler(_feed_large_fleet) == 4
        base = client.dashboard_link.rsplit("/", 1)[0]
        started = time.perf_counter()
        metrics = httpx.get(base + "/metrics").text
        metrics_seconds = time.perf_counter() - started
        assert "sollol_fleet_texts_per_second 39920.0" in metrics

        driver = _chrome()
        try:
            started = time.perf_counter()
            driver.get(base + "/sollol")
            shown = wait_for(lambda: (lambda s: s if len(s["rows"]) == 50 and s["aggregate"]
                                      and s["slow"] else None)(driver.execute_script(SHOWN)),
                             30, "the page's aggregates and first 50 rows")
            render_seconds = time.perf_counter() - started
            ARTIFACTS.mkdir(exist_ok=True)
            driver.save_screenshot(str(ARTIFACTS / "sollol-dashboard-1000-nodes.png"))
            assert shown["aggregate"] == [AGGREGATE]
            assert shown["rows"] == sorted(node_name(i) for i in range(1000))[:50]
            assert [f.split(": ")[0] for f in shown["failing"]] == [
                EJECTED, *QUARANTINED, ERRORING]
            assert [s.split(": ")[0] for s in shown["slow"]] == SLOW
            assert "node \u25b2" in shown["headers"]

            driver.execute_script(CLICK_NEXT)
            page2 = sorted(node_name(i) for i in range(1000))[50:100]
            wait_for(lambda: driver.execute_script(SHOWN)["rows"] == page2, 10,
                     "page 2 after clicking next")

            driver.execute_script(CHOOSE, 0, "errors")  # sort by
            driver.execute_script(CHOOSE, 1, "descending")
            shown = wait_for(lambda: (lambda s: s if s["rows"][:2] == [EJECTED, ERRORING]
                                      else None)(driver.execute_script(SHOWN)),
                             10, "the table sorted by errors, most first")
            assert "errors \u25bc" in shown["headers"]
            assert len(shown["rows"]) == 50
        finally:
            driver.quit()
    with capsys.disabled():
        print(f"\n/sollol with 1000 nodes x 4 workers: aggregates and 50 rows shown "
              f"{render_seconds:.2f} s after opening; /metrics {metrics_seconds:.2f} s "
              f"({len(metrics) / 1e6:.1f} MB)")
