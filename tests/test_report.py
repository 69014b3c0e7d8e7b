"""The run report as a user reads it: each node's fate and reason, a repr that is the
report, an HTML view for notebooks, no link to a cluster that is gone; the demo's output."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sollol_dask._report import EmbedReport, merge_node_states
from sollol_dask.dashboard import FleetStatus


def report(**changes) -> EmbedReport:
    fields = dict(output="out/", model="nomic-embed-text", dimension=768, rows=1000,
                  rows_written=1000, embedded=990, null_rows=10, invalid_rows=0,
                  parts_written=4, parts_skipped=0, seconds=10.0,
                  per_node={"http://gpu:11434": 958, "http://hung:11434": 32},
                  node_states=merge_node_states([
                      [{"node": "http://gpu:11434", "state": "up", "reason": "", "errors": {}},
                       {"node": "http://hung:11434", "state": "up", "reason": "",
                        "errors": {"timeout": 2}, "overtaken": 3},
                       {"node": "http://other:11434", "state": "excluded",
                        "reason": "digest sha256:bbbb differs from the fleet's sha256:aaaa",
                        "errors": {}}],
                      [{"node": "http://hung:11434", "state": "ejected",
                        "reason": "3 failure(s) in a row, last: timeout", "errors": {"timeout": 3}},
                       {"node": "http://other:11434", "state": "excluded",
                        "reason": "digest sha256:bbbb differs from the fleet's sha256:aaaa",
                        "errors": {}}],
                  ]))
    fields.update(changes)
    return EmbedReport(**fields)


def test_each_node_line_says_what_became_of_it_and_why():
    lines = str(report()).splitlines()
    assert lines[-3:] == [
        "  http://gpu:11434                       958 texts   96.8%",
        "  http://hung:11434                       32 texts    3.2%  ejected: 3 failure(s) in a "
        "row, last: timeout (5 timeout errors; 3 batches finished first elsewhere (slow or "
        "hung))",
        "  http://other:11434                       0 texts    0.0%  excluded: digest "
        "sha256:bbbb differs from the fleet's sha256:aaaa",
    ]


def test_repr_is_the_report_and_html_shows_the_same_in_a_table():
    shown = report()
    assert repr(shown) == str(shown)
    assert repr(shown).startswith("output      out/\nmodel       nomic-embed-text (dimension 768)")
    page = shown._repr_html_()
    assert "<td>http://other:11434</td><td>0</td><td>0.0%</td><td>excluded: digest " \
           "sha256:bbbb differs from the fleet&#x27;s sha256:aaaa</td>" in page
    assert "<th style='text-align:left'>time</th><td style='text-align:left'>10.0 s, 99 " \
           "embeddings/s</td>" in page


def test_a_dashboard_link_is_shown_only_while_there_is_one():
    assert "dashboard" not in str(report(dashboard=None))
    assert "dashboard   http://127.0.0.1:8787/sollol" in str(
        report(dashboard="http://127.0.0.1:8787/status"))


def test_fleet_status_repr_is_its_table():
    status = FleetStatus({"nodes": [], "fleet_rate": 0.0}, "this process")
    assert repr(status) == "sollol-dask fleet (this process): no embedding activity reported yet"


def test_the_demo_keeps_the_output_it_names(capsys):
    from sollol_dask.demo import run_demo

    out = run_demo(rows=300)
    printed = capsys.readouterr().out
    assert f"output      {out}\n" in printed
    assert f"the output is kept in {out} (delete it when done)" in printed
    assert len(pd.read_parquet(out)) == 300  # it is there after the demo has ended
    assert "dashboard   " not in printed  # the demo's cluster is closed: no dead link
    assert Path(out).parent.name.startswith("sollol-demo-output-")
