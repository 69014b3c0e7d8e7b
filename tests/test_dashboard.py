"""Observability: the /sollol page in a real browser, /metrics, status, the preload menu."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
from distributed import Client

import sollol_dask as sd
from sollol_dask.cli import main as cli_main
from sollol_dask.dashboard import FleetView

from .conftest import MODEL, local_client, REPO

SECRET = "Bearer dashboard-secret-42"
ARTIFACTS = REPO / "test-artifacts"


def wait_for(predicate, timeout: float, what: str):
    """Wait for an asynchronous report (workers send metrics about once a second)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def cluster():
    with local_client(2) as client:
        yield client


@pytest.fixture(scope="module")
def job(cluster, tmp_path_factory):
    """A finished embed_parquet run on two sim nodes (one behind a header secret)."""
    from sollol_dask.testing import SimNode

    a, b = SimNode("gpu", load_seconds=0).start(), SimNode("gpu", load_seconds=0).start()
    base = cluster.dashboard_link.rsplit("/", 1)[0]
    before = httpx.get(base + "/sollol").status_code
    tmp = tmp_path_factory.mktemp("dash")
    pd.DataFrame({"text": [f"dash {i}" for i in range(800)]}).to_parquet(tmp / "in.parquet")
    emb = sd.Embedder([a.url, sd.Node(b.url, headers={"Authorization": SECRET})], model=MODEL)
    report = emb.embed_parquet(str(tmp / "in.parquet"), str(tmp / "out"), rows_per_part=100)

    def fleet():
        # Every request answered (a hedge copy that lost runs to its end) and the
        # scheduler's per-node counts are the sims' own.
        if a.counters.inflight or b.counters.inflight:
            return None
        data = cluster.run_on_scheduler(lambda dask_scheduler:
                                        dask_scheduler.plugins["sollol-dask-fleet"].fleet())
        texts = {r["node"]: r["texts"] for r in data["nodes"]}
        return data if texts == {a.url: a.counters.texts, b.url: b.counters.texts} else None

    data = wait_for(fleet, 15, "worker reports to reach the scheduler")
    assert a.counters.texts + b.counters.texts >= 800
    yield {"base": base, "nodes": (a, b), "emb": emb, "report": report, "data": data,
           "status_before_register": before}
    a.stop(), b.stop()


def test_page_appears_on_a_running_scheduler_after_registration(job):
    assert job["status_before_register"] == 404
    assert httpx.get(job["base"] + "/sollol").status_code == 200


def test_metrics_series_match_the_run(job):
    text = httpx.get(job["base"] + "/metrics").text
    a, b = job["nodes"]
    for node in (a, b):
        line = f'sollol_texts_total{{model="{MODEL}",node="{node.url}"}} {float(node.counters.texts)}'
        assert line in text, line
        assert node.counters.texts > 0
    for series in ("sollol_requests_total", "sollol_inflight", "sollol_inflight_cap",
                   "sollol_request_seconds_bucket", "sollol_texts_per_second"):
        assert series in text
    assert "dashboard-secret" not in text


def test_token_totals_are_what_the_sims_reported(job):
    # The sim reports prompt_eval_count = sum(len(text) // 4 + 1) per request.
    expected = sum(len(f"dash {i}") // 4 + 1 for i in range(800))
    assert job["report"].tokens == expected
    assert f"tokens      {expected} (" in str(job["report"])
    # Per node: the tokens each sim reported, a hedge copy that lost included (the node
    # did that work): the run's own when no batch was copied.
    a, b = job["nodes"]  # (the report is made when the run ends: a copy may end later)
    assert sum(job["report"].per_node_tokens.values()) >= expected
    assert all(job["report"].per_node_tokens.get(n.url, 0) <= n.counters.tokens for n in (a, b))
    text = httpx.get(job["base"] + "/metrics").text
    totals = {line.split('node="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
              for line in text.splitlines() if line.startswith("sollol_tokens_total{")}
    assert totals == {a.url: a.counters.tokens, b.url: b.counters.tokens}
    assert sum(totals.values()) >= expected
    assert "sollol_tokens_per_second{" in text


def test_status_matches_the_run(job, capsys):
    a, b = job["nodes"]
    status = job["emb"].status()
    by_node = {r["node"]: r for r in status.nodes}
    assert by_node[a.url]["texts"] == a.counters.texts and by_node[b.url]["texts"] == b.counters.texts
    assert by_node[a.url]["cap"] == 2  # the cluster-wide cap, from the broker
    html = status._repr_html_()
    assert a.url in html and "<table" in html
    scheduler = job["emb"].status().source.split()[-1]
    assert cli_main(["status", "--scheduler", scheduler]) == 0
    out = capsys.readouterr().out
    assert f"{a.url}" in out and str(a.counters.texts) in out and "/sollol" in out
    for shown in (out, html, str(status), json.dumps(job["data"], default=str)):
        assert "dashboard-secret" not in shown


def _chrome():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--window-size=1400,1000"):
        options.add_argument(flag)
    service = Service(shutil.which("chromedriver") or "/usr/bin/chromedriver")
    return webdriver.Chrome(service=service, options=options)  # fails the test if it cannot


# Bokeh renders into shadow roots: look through them.
DEEP_ROWS = """
const found = [];
const walk = (root) => {
  root.querySelectorAll('tr.sollol-node').forEach(r => found.push(
      Array.from(r.querySelectorAll('td')).map(td => td.textContent)));
  root.querySelectorAll('*').forEach(el => { if (el.shadowRoot) walk(el.shadowRoot); });
};
walk(document);
return found;
"""


@pytest.mark.browser
def test_page_in_a_real_browser_shows_one_row_per_node(job):
    a, b = job["nodes"]
    driver = _chrome()
    try:
        driver.get(job["base"] + "/sollol")
        rows = wait_for(lambda: [r for r in driver.execute_script(DEEP_ROWS) if r] or None,
                        30, "the fleet table to render")
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "sollol-dashboard.png"))
        source = driver.page_source
    finally:
        driver.quit()
    by_node = {r[0]: r for r in rows}
    assert set(by_node) == {a.url, b.url}
    assert int(by_node[a.url][6]) == a.counters.texts > 0  # the texts column
    assert int(by_node[b.url][6]) == b.counters.texts > 0
    assert "dashboard-secret" not in source
    assert (ARTIFACTS / "sollol-dashboard.png").stat().st_size > 10_000


def test_preload_puts_the_page_in_the_menu(tmp_path):
    exe = Path(sys.executable).parent / "dask"
    sched_file = tmp_path / "s.json"
    proc = subprocess.Popen([str(exe), "scheduler", "--host", "127.0.0.1", "--port", "0",
                             "--dashboard-address", "127.0.0.1:0", "--scheduler-file",
                             str(sched_file), "--preload", "sollol_dask.dashboard.preload"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        info = wait_for(lambda: sched_file.exists() and json.loads(sched_file.read_text()), 30,
                        "the scheduler to start")
        with Client(info["address"]) as client:
            base = client.dashboard_link.rsplit("/", 1)[0]
            plugins = client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.plugins))
        plots = httpx.get(base + "/individual-plots.json").json()
        assert plots.get("Individual Sollol") == "/individual-sollol"
        assert "individual-sollol" in httpx.get(base + "/status").text  # the "More" menu
        assert httpx.get(base + "/sollol").status_code == 200
        assert {"sollol-dask-fleet", "sollol-dask-slots"} <= set(plugins)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


# -- the page's Bokeh models, fed by a FleetView on a fake clock --------------------------

def _node_report(name, texts, *, latencies=(0.2,), size=None, size_vram=None, speed=50.0):
    from sollol_dask.policy._metrics import LatencySketch

    sketch = LatencySketch()
    for seconds in latencies:
        sketch.add(seconds)
    return {"node": name, "model": MODEL, "digest": "0a1b2c3d4e5f", "state": "up",
            "reason": "", "cap": 2, "inflight": 0, "requests": len(latencies), "texts": texts,
            "errors": {}, "speed": speed, "latency_counts": [0] * 11, "latency_sum": 0.0,
            "latency_sketch": sketch.to_wire(), "size": size, "size_vram": size_vram}


def _open_page(view):
    """A new browser tab's document, and its refresh (what the server calls each second)."""
    from types import SimpleNamespace

    from bokeh.document import Document

    from sollol_dask.dashboard._page import fleet_doc

    monitor = SimpleNamespace(fleet=view.data)
    doc = Document()
    fleet_doc(SimpleNamespace(plugins={"sollol-dask-fleet": monitor}), {}, doc)
    refresh = next(iter(doc.session_callbacks)).callback
    return doc, refresh


def _cells(doc) -> dict[str, list[str]]:
    import re

    table = doc.select_one({"name": "sollol-fleet"}).text
    rows = re.findall(r"<tr class='sollol-node'>(.*?)</tr>", table)
    cells = [re.findall(r"<td>(.*?)</td>", r) for r in rows]
    return {c[0]: c for c in cells}


def test_charts_start_at_zero_and_an_idle_fleet_reads_0_to_1(clock):
    view = FleetView(clock=clock)
    doc, refresh = _open_page(view)
    throughput, per_node = (doc.select_one({"name": n}) for n in
                            ("sollol-throughput", "sollol-per-node"))
    assert (throughput.y_range.start, throughput.y_range.end) == (0, 1)
    assert (per_node.x_range.start, per_node.x_range.end) == (0, 1)  # not -1 .. 1
    for second in range(10):
        view.update("w1", "c", [_node_report("http://a:11434", 300 * second)])
        view.tick()
        clock.advance(1)
    refresh()
    assert throughput.y_range.start == 0
    assert throughput.y_range.end == pytest.approx(300 * 1.1)  # the busiest second, 10% over
    # a second without a report: 1200 texts over the last 5 s
    assert (per_node.x_range.start, per_node.x_range.end) == (0, pytest.approx(240 * 1.1))


def test_a_page_opened_late_shows_the_minutes_before_it(clock):
    view = FleetView(clock=clock)
    for second in range(120):
        view.update("w1", "c", [_node_report("http://a:11434", 100 * second)])
        view.tick()
        clock.advance(1)
    doc, refresh = _open_page(view)
    data = doc.select_one({"name": "sollol-throughput-data"}).data
    assert len(data["t"]) == 121 and data["t"][0] == 1000.0 * 1000  # ms, from the first tick
    assert max(data["rate"]) == 100.0 and data["capacity"][60] == 50.0
    clock.advance(1)
    refresh()
    assert len(data["t"]) == 122  # then only the new point, not the history again


def test_memory_column_says_where_the_model_runs():
    from sollol_dask.dashboard._status import render_table

    view = FleetView()
    view.update("w1", "c", [
        _node_report("http://cpu:11434", 1, size=300_000_000, size_vram=0),
        _node_report("http://gpu:11434", 1, size=300_000_000, size_vram=300_000_000),
        _node_report("http://split:11434", 1, size=300_000_000, size_vram=200_000_000),
        _node_report("http://llama:8080", 1)])  # llama.cpp does not say
    table = render_table(view.data()["nodes"])
    assert "<th>memory</th>" in table and "VRAM" not in table
    for node, memory in (("cpu", "CPU 286 MiB"), ("gpu", "GPU 286 MiB"),
                         ("split", "GPU 191 MiB + CPU 95 MiB")):
        assert f"<td>http://{node}:11434</td>" in table and f"<td>{memory}</td>" in table
    assert "<td>-</td><td>0</td></tr>" in table  # llama: no memory figure, no errors


def test_p50_and_p95_show_the_latencies_seen(clock):
    view = FleetView(clock=clock)
    view.update("w1", "c", [_node_report("http://a:11434", 100,
                                         latencies=[0.31] * 10 + [2.6] * 1)])
    view.update("w2", "c", [_node_report("http://a:11434", 100,
                                         latencies=[0.42] * 8 + [2.6] * 1)])  # merged
    doc, _ = _open_page(view)
    row = _cells(doc)["http://a:11434"]
    assert (row[9], row[10]) == ("0.31 s", "2.6 s")  # not the bucket edges "0.5 s", "5 s"
    status = str(sd.FleetStatus(view.data(), "this process"))
    assert " 0.31 s " in status and " 2.6 s " in status
    from sollol_dask.dashboard._status import seconds_text

    assert [seconds_text(s) for s in (0.0085, 0.5, 0.996, 9.96, 125.0)] == \
        ["8.5 ms", "0.50 s", "1.0 s", "10 s", "125 s"]  # "1.0 s" was measured, not an edge


def test_jobs_list_bag_dataframe_and_embed_jobs(clock):
    view = FleetView(clock=clock)
    doc, refresh = _open_page(view)
    assert "no embedding job yet" in doc.select_one({"name": "sollol-jobs"}).text
    view.job_started("p1", "out/", rows=800, parts=8)
    view.part_done("embed_bag-1", 400, part=0, seconds=4.0, label="embed_bag", parts=3,
                   unit="texts")
    view.part_done("embed_dataframe-1", 1000, part=0, seconds=2.0, parts=2, unit="rows",
                   label="embed_dataframe 'text' -> 'embedding'")
    view.part_done("embed-1", 4096, part=0, seconds=2.0, label="embed() of 8192 texts",
                   parts=2, unit="texts", total_rows=8192)
    refresh()
    text = doc.select_one({"name": "sollol-jobs"}).text
    for line in ("out/: 0 / 800 rows, 0 / 8 partitions, 0 rows/s, running",
                 "embed_bag: 400 texts, 1 / 3 partitions, 100 texts/s, ETA 8 s",
                 "embed_dataframe &#x27;text&#x27; -&gt; &#x27;embedding&#x27;: 1000 rows, "
                 "1 / 2 partitions, 500 rows/s, ETA 2 s",
                 "embed() of 8192 texts: 4096 / 8192 texts, 1 / 2 partitions, 2048 texts/s, "
                 "ETA 2 s"):
        assert f"<li class='sollol-job'>{line}</li>" in text, text


# -- on the real cluster ------------------------------------------------------------------

def test_status_command_shows_model_digest_and_memory_columns(job, capsys):
    import re
    from sollol_dask.dashboard._status import seconds_text

    a, _ = job["nodes"]
    scheduler = job["emb"].status().source.split()[-1]
    assert cli_main(["status", "--scheduler", scheduler]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert re.split(r"\s{2,}", lines[1].strip()) == [
        "node", "model", "digest", "state", "in flight / cap", "texts/s", "texts", "tokens/s",
        "tokens", "p50", "p95", "memory", "errors"]
    row = next(re.split(r"\s{2,}", line.strip()) for line in lines if line.startswith(a.url))
    assert row[1:4] == [MODEL, a.digest[:12], "up"] and row[6] == str(a.counters.texts)
    assert int(row[8]) > 0  # tokens, as the sim reported them (prompt_eval_count)
    assert row[11] == "GPU 286 MiB"  # the sim's /api/ps: 300 MB, all in VRAM
    # p50/p95 are the scheduler's merged latency sketches (their interpolation is unit-tested
    # in test_metrics.py); here: the columns show those measured numbers, in order.
    measured = next(r for r in job["data"]["nodes"] if r["node"] == a.url)
    assert row[9:11] == [seconds_text(measured["p50"]), seconds_text(measured["p95"])]
    assert 0 < measured["p50"] <= measured["p95"]


def test_bag_dataframe_and_distributed_embed_jobs_are_listed(job, cluster, monkeypatch):
    import dask.bag as db
    import dask.dataframe as dd

    emb = job["emb"]
    texts = [f"listed {i}" for i in range(600)]
    assert len(emb.embed_bag(db.from_sequence(texts, npartitions=3)).compute()) == 600
    frame = dd.from_pandas(pd.DataFrame({"text": texts[:500]}), npartitions=2)
    assert len(emb.embed_dataframe(frame).compute()) == 500
    monkeypatch.setattr(sd._embedder, "DISTRIBUTE_ABOVE", 1000)
    monkeypatch.setattr(sd._embedder, "CHUNK", 1000)
    assert emb.embed([f"spread {i}" for i in range(2500)]).shape[0] == 2500

    def finished():
        jobs = cluster.run_on_scheduler(lambda dask_scheduler: dask_scheduler.plugins[
            "sollol-dask-fleet"].fleet()["jobs"])
        done = {j["label"]: (j["done_rows"], j["done_parts"], j["parts"], j["unit"])
                for j in jobs if j["finished"]}
        return done if len(done) == 4 else None

    done = wait_for(finished, 15, "the jobs' parts to reach the monitor")
    assert done == {job["report"].output: (800, 8, 8, "rows"),  # the fixture's parquet run
                    "embed_bag": (600, 3, 3, "texts"),
                    "embed_dataframe 'text' -> 'embedding'": (500, 2, 2, "rows"),
                    "embed() of 2500 texts": (2500, 3, 3, "texts")}


THROUGHPUT = """
const doc = Bokeh.documents[0];
if (!doc) return null;
const data = doc.get_model_by_name('sollol-throughput-data').data;
const axis = doc.get_model_by_name('sollol-throughput').y_range;
return {t: Array.from(data.t), rate: Array.from(data.rate), start: axis.start, end: axis.end};
"""


@pytest.mark.browser
def test_a_newly_opened_page_shows_throughput_from_before_it_opened(job):
    opened = time.time()
    driver = _chrome()
    try:
        driver.get(job["base"] + "/sollol")
        shown = wait_for(lambda: driver.execute_script(THROUGHPUT), 30, "the chart's data")
    finally:
        driver.quit()
    before = [rate for t, rate in zip(shown["t"], shown["rate"]) if t / 1000 < opened - 1]
    assert max(before) > 0  # the fixture's run, embedded before this tab existed
    assert shown["start"] == 0 and shown["end"] >= max(shown["rate"])
