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
        data = cluster.run_on_scheduler(lambda dask_scheduler:
                                        dask_scheduler.plugins["sollol-dask-fleet"].fleet())
        return data if sum(r["texts"] for r in data["nodes"]) == 800 else None

    data = wait_for(fleet, 15, "worker reports to reach the scheduler")
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
    assert sum(job["report"].per_node_tokens.values()) == expected
    assert f"tokens      {expected} (" in str(job["report"])
    text = httpx.get(job["base"] + "/metrics").text
    totals = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith("sollol_tokens_total{")]
    assert len(totals) == 2 and sum(totals) == expected
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
