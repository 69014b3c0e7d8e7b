"""Nodes that join and leave while a job runs (nodes="auto" with rediscovery).

Hosts are 127.0.0.x addresses; sims there stand for machines switched on mid-run.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from distributed import Client

import sollol_dask as sd
from sollol_dask.cli import main
from sollol_dask import RouterSettings
from sollol_dask.backends import EmbedOptions
from sollol_dask.cluster._plugin import plugin_name

from .conftest import MODEL, local_client, stop_process_groups
from .test_cluster import _dask
from .test_discovery import free_port


def wait_for(condition, seconds: float, what: str) -> None:
    """Poll ``condition`` until true (a deadline, not a sleep standing in for an event)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_a_discovered_fleet_keeps_its_identity_as_nodes_join():
    one = RouterSettings(nodes=(sd.Node("http://127.0.0.2:1"),), opts=EmbedOptions(MODEL),
                         fleet="discovered:x")
    two = RouterSettings(nodes=(sd.Node("http://127.0.0.2:1"), sd.Node("http://127.0.0.3:1")),
                         opts=EmbedOptions(MODEL), fleet="discovered:x")
    assert plugin_name(one) == plugin_name(two)
    listed = [RouterSettings(nodes=s.nodes, opts=s.opts) for s in (one, two)]
    assert plugin_name(listed[0]) != plugin_name(listed[1])  # explicit lists: as before


def test_a_node_switched_on_later_joins_the_in_process_router(sims):
    port = free_port("127.0.0.2", "127.0.0.3", "127.0.0.4")
    first = sims("gpu", host="127.0.0.2", port=port)
    spec = sd.DiscoverySpec(env=False, local=False, hosts=("127.0.0.2", "127.0.0.3",
                                                           "127.0.0.4"), ports=(port,),
                            timeout=1.0)
    with sd.Embedder(spec, model=MODEL, rediscover=0.2) as emb:
        assert [n.url for n in emb.nodes] == [first.url]
        emb.embed([f"warm {i}" for i in range(50)])
        late = sims("gpu", host="127.0.0.3", port=port)
        other = sims("gpu", host="127.0.0.4", port=port, digest_variant="q4")
        wait_for(lambda: len(emb.nodes) == 2, 10, "the late node to be found")
        assert [n.url for n in emb.nodes] == [first.url, late.url]  # wrong digest: not found
        wait_for(lambda: any(r["node"] == late.url and r["state"] == "up"
                             for r in emb.node_stats()), 10, "the late node to be admitted")
        vectors = emb.embed([f"text {i}" for i in range(2000)])
        assert vectors.shape == (2000, 768)
        assert late.counters.texts > 300, late.counters.texts
        assert other.counters.requests == 0


@pytest.mark.parametrize("rows", [4000])
def test_a_node_started_mid_run_gets_a_fair_share_and_no_row_is_lost(sims, tmp_path, rows):
    port = free_port("127.0.0.2", "127.0.0.3", "127.0.0.4")
    early = [sims("gpu", host="127.0.0.2", port=port), sims("gpu", host="127.0.0.3", port=port)]
    texts = [f"document {i} " + "words " * (i % 5) for i in range(rows)]
    pd.DataFrame({"id": np.arange(rows), "text": texts}).to_parquet(tmp_path / "in.parquet")
    spec = sd.DiscoverySpec(env=False, local=False, hosts=("127.0.0.2", "127.0.0.3",
                                                           "127.0.0.4"), ports=(port,),
                            timeout=1.0)
    box: dict = {}
    with local_client(2) as client:
        with sd.Embedder(spec, model=MODEL, rediscover=0.5) as emb:
            run = threading.Thread(target=lambda: box.update(report=emb.embed_parquet(
                str(tmp_path / "in.parquet"), str(tmp_path / "out"), client=client,
                rows_per_part=100)))
            run.start()
            wait_for(lambda: sum(n.counters.texts for n in early) >= rows // 4, 60,
                     "a quarter of the rows")
            late = sims("gpu", host="127.0.0.4", port=port)
            before = [n.counters.texts for n in early]
            # The share is measured over the next half of the rows (the late node's
            # join delay included); then a node of the first two is switched off: it
            # is ejected and the run finishes on the others.
            wait_for(lambda: sum(n.counters.texts for n in (*early, late)) >= rows * 3 // 4
                     or not run.is_alive(), 60, "three quarters of the rows")
            window = [n.counters.texts - b for n, b in zip(early, before)]
            late_window = late.counters.texts
            early[0].kill()
            run.join(120)
            assert not run.is_alive()
    report = box["report"]
    out = pq.read_table(tmp_path / "out").to_pandas()
    assert sorted(out["id"]) == list(range(rows))  # none lost, none twice
    assert report.rows == rows
    assert late.counters.texts > late_window  # it kept working after the kill
    fair = (sum(window) + late_window) / 3
    share = late_window / fair
    print(f"\nlate node: {late_window} texts of the {sum(window) + late_window} embedded "
          f"after it was switched on ({share:.0%} of a fair third; the early nodes "
          f"{window}); {late.counters.texts} in all of {rows}")
    assert share >= 0.6, (late_window, window)


def test_each_worker_finds_the_server_beside_it(tmp_path, sims):
    """`dask worker` processes on 127.0.0.2 and 127.0.0.3, a sim beside each (same port):
    discovery finds both from the workers, under the workers' own addresses."""
    port = free_port("127.0.0.2", "127.0.0.3")
    beside = [sims("gpu", host="127.0.0.2", port=port), sims("gpu", host="127.0.0.3", port=port)]
    sched_file = tmp_path / "scheduler.json"
    procs = [_dask("scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address",
                   "127.0.0.1:0", "--scheduler-file", str(sched_file))]
    try:
        wait_for(sched_file.exists, 30, "the dask scheduler")
        for host in ("127.0.0.2", "127.0.0.3"):
            procs.append(_dask("worker", "--scheduler-file", str(sched_file), "--nthreads", "1",
                               "--host", host, "--no-dashboard"))
        with Client(json.loads(sched_file.read_text())["address"]) as client:
            client.wait_for_workers(2, timeout=60)
            found = sd.discover(MODEL, env=False, local=False, ports=(port,), client=client,
                                timeout=2.0)
            assert sorted(n.url for n in found.nodes) == sorted(b.url for b in beside)
            # No source but the workers: each asked its own host, once.
            assert found.asked == 2
            assert sorted(s.source for s in found.kept) == sorted(
                f"worker {w}" for w in client.scheduler_info()["workers"])
            assert all(b.counters.requests == 0 for b in beside)  # discovery embeds nothing
    finally:
        stop_process_groups(list(reversed(procs)))


def test_embed_discover_on_the_command_line(sims, tmp_path, capsys):
    port = free_port("127.0.0.2", "127.0.0.3")
    nodes = [sims("gpu", host="127.0.0.2", port=port), sims("gpu", host="127.0.0.3", port=port)]
    pd.DataFrame({"id": range(300), "text": [f"t {i}" for i in range(300)]}).to_parquet(
        tmp_path / "in.parquet")
    code = main(["embed", str(tmp_path / "in.parquet"), str(tmp_path / "out"), "--model", MODEL,
                 "--discover", "--no-env", "--no-local", "--cidr", "127.0.0.0/29",
                 "--port", str(port), "--timeout", "1", "--no-progress",
                 "--rows-per-part", "50"])
    assert code == 0, capsys.readouterr().err
    assert len(pq.read_table(tmp_path / "out")) == 300
    assert all(n.counters.texts > 0 for n in nodes)


def test_closing_an_auto_embedder_stops_its_rediscovery(sims):
    import threading as th

    node = sims("gpu")
    emb = sd.Embedder(sd.DiscoverySpec(env=False, hosts=(f"127.0.0.1:{node.port}",),
                                       local=False), model=MODEL, rediscover=0.1)
    assert [t for t in th.enumerate() if t.name == "sollol-dask-rediscovery"]
    emb.close()
    assert not [t for t in th.enumerate() if t.name == "sollol-dask-rediscovery"]
    with pytest.raises(sd.ConfigurationError, match="rediscover= needs nodes='auto'"):
        sd.Embedder([node.url], model=MODEL, rediscover=5)


def test_embed_discover_refuses_listed_nodes_and_headers(tmp_path, capsys):
    code = main(["embed", str(tmp_path), str(tmp_path / "out"), "--model", MODEL, "--discover",
                 "--header", "Authorization: Bearer x"])
    assert code == 2  # a usage mistake (exit codes: 2)
    assert capsys.readouterr().err == (
        "sollol-dask: error: --discover finds the nodes and sends them no headers: drop "
        "--node, --openai-node, --header and --header-env, or drop --discover\n")
