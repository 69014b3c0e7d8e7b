"""Issue 17: fleets of hundreds of nodes. ``embed_parquet`` with default settings on 64,
256 and 1,024 simulated nodes (``SimFleet``: many sims on one loop per process), with the
CPU of the client, the scheduler, the workers and the sims beside the efficiency.

Capacity is exact, from the sims' time model (each node's best rate at requests of 512,
divided by its slowdown). A warm-up run first (its own corpus), so the routers and the
broker know every node's speed, as a long-lived cluster does; the timed run follows.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from distributed import Client, LocalCluster

import sollol_dask as sd
from sollol_dask.testing import PROFILES, SimFleet

from ._common import LARGEST_BATCH, MODEL, texts

DIMENSION = 64  # small vectors: the client's parse cost is not what is measured here


def _corpus(path: Path, rows: int, tag: str) -> list[str]:
    items = texts(rows, tag=tag)
    pq.write_table(pa.table({"id": list(range(rows)), "text": items}), path,
                   row_group_size=1024)
    return items


def _scheduler_cpu(dask_scheduler=None) -> float:
    # LocalCluster runs the scheduler in this process, on its own event-loop thread:
    # that thread's CPU time is the scheduler's (the client's is the rest of the process).
    return time.thread_time()


def _worker_cpu() -> float:
    return time.process_time()


def _worker_rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _broker_state(dask_scheduler=None) -> dict:
    return dask_scheduler.plugins["sollol-dask-slots"].load()


def _lease_stats(dask_worker=None) -> dict:
    totals: dict = {}
    for plugin in dask_worker.plugins.values():
        stats = getattr(getattr(getattr(plugin, "router", None), "slots", None), "stats", None)
        for k, v in (stats or {}).items():
            totals[k] = totals.get(k, 0) + v
    return totals


def run_fleet(count: int, *, workers: int = 2, rows_per_node: int = 150,
              slowdowns: list[float] | None = None, processes: int = 1,
              churn: bool = False, profile: bool = False,
              **embed_kwargs) -> dict:
    """One timed ``embed_parquet`` (defaults unless ``embed_kwargs``) on ``count`` cpu sims.

    ``churn``: a tenth of the nodes leave at 30% of the expected run and come back at 70%.
    """
    slowdowns = slowdowns or [1.0] * count
    rows = rows_per_node * count
    with tempfile.TemporaryDirectory() as tmp, \
            SimFleet(["cpu"] * count, slowdowns=slowdowns, processes=processes,
                     dimension=DIMENSION) as fleet, \
            LocalCluster(n_workers=workers, threads_per_worker=2, processes=True,
                         host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster) as client:
        tmp = Path(tmp)
        _corpus(tmp / "warm.parquet", 20 * count, "w")
        items = _corpus(tmp / "in.parquet", rows, "t")
        cap = sum(PROFILES["cpu"].capacity(items, LARGEST_BATCH) / s for s in slowdowns)
        emb = sd.Embedder(fleet.urls, model=MODEL)
        warm_started = time.perf_counter()
        emb.embed_parquet(str(tmp / "warm.parquet"), str(tmp / "warm-out"), client=client)
        warm_seconds = time.perf_counter() - warm_started
        before = {"client": time.process_time(),
                  "scheduler": client.run_on_scheduler(_scheduler_cpu),
                  "workers": sum(client.run(_worker_cpu).values()),
                  "sims": fleet.cpu_seconds(),
                  "load": client.run_on_scheduler(_broker_state)}
        mover, down = _churn(fleet, count, rows / cap) if churn else (None, None)
        started, wall_start = time.perf_counter(), time.time()
        report = emb.embed_parquet(str(tmp / "in.parquet"), str(tmp / "out"), client=client,
                                   **embed_kwargs)
        seconds = time.perf_counter() - started
        if mover:
            mover.join()
        scheduler = client.run_on_scheduler(_scheduler_cpu) - before["scheduler"]
        load = client.run_on_scheduler(_broker_state)
        cpu = {"client": time.process_time() - before["client"] - scheduler,
               "scheduler": scheduler,
               "workers": sum(client.run(_worker_cpu).values()) - before["workers"],
               "sims": fleet.cpu_seconds() - before["sims"]}
        counters = fleet.counters()
        rss = list(client.run(_worker_rss_mb).values())
        worker_leases: dict = {}
        for stats in client.run(_lease_stats).values():
            for k, v in stats.items():
                worker_leases[k] = worker_leases.get(k, 0) + v
        if profile:
            print("   scheduler's loop:")
            _print_profile(client.profile(start=wall_start, scheduler=True))
            print("   workers' task threads (the routers' loops are not sampled):")
            _print_profile(client.profile(start=wall_start))
        ids = pq.read_table(tmp / "out", columns=["id"]).column("id").to_numpy()
    # No row lost or written twice (churn: batches cut off by a dying node are resent).
    rows_check = {"rows_out": int(len(ids)), "distinct_ids": int(len(set(ids.tolist())))}
    if rows_check != {"rows_out": rows, "distinct_ids": rows}:
        raise AssertionError(f"{rows} rows in, out: {rows_check}")
    effective = cap
    if down:  # capacity the fleet did not have while nodes were down during the run
        per_node = [PROFILES["cpu"].capacity(items, LARGEST_BATCH) / s for s in slowdowns]
        down["seconds"] = max(0.0, min(down["to"], started + seconds) - down["from"])
        effective -= sum(per_node[i] for i in range(0, count, 10)) * down["seconds"] / seconds
    leases = load["granted"] - before["load"]["granted"]
    rpcs = load["requests"] - before["load"]["requests"]
    max_inflight = max(c["max_inflight"] for c in counters)
    result = {
        "nodes": count, "workers": workers, "rows": rows, "seconds": seconds,
        "rate": report.embedded / seconds, "capacity": cap,
        "efficiency": report.embedded / seconds / effective,
        "effective_capacity": effective, "churn": down, **rows_check,
        "parts": report.parts_written, "settings": embed_kwargs or "defaults",
        "warm_up_seconds": warm_seconds,
        "cpu_per_second": {k: v / seconds for k, v in cpu.items()},
        "leases_per_second": leases / seconds, "lease_rpcs_per_second": rpcs / seconds,
        "scheduler_cpu_us_per_lease": cpu["scheduler"] / max(1, leases) * 1e6,
        "sim_max_inflight": max_inflight, "cap": 2,
        "worker_rss_mb": max(rss),
        "worker_lease_stats": worker_leases,
        "sim_requests": sum(c["requests"] for c in counters),
        "idle": _idle(counters, wall_start, wall_start + seconds),
    }
    print(f"  {count} nodes x {workers} workers{' (churn)' if churn else ''}: efficiency {result['efficiency']:.2f} "
          f"({result['rate']:.0f}/{effective:.0f} texts/s, {seconds:.1f} s, {report.parts_written} parts); "
          "CPU/s " + ", ".join(f"{k} {v:.2f}" for k, v in result["cpu_per_second"].items())
          + f"; worker lease RPCs {worker_leases.get('requests', 0)} (mean "
          f"{worker_leases.get('seconds', 0) / max(1, worker_leases.get('requests', 1)) * 1e3:.0f} ms), "
          f"{worker_leases.get('releases', 0)} release RPCs"
          + f"; leases/s {result['leases_per_second']:.0f} (RPCs/s "
          f"{result['lease_rpcs_per_second']:.0f}), max in flight {max_inflight}; "
          f"worker RSS {max(rss):.0f} MB; idle "
          + ", ".join(f"{k} {v:.2f}" for k, v in result["idle"].items()),
          flush=True)
    return result


def _churn(fleet: SimFleet, count: int, expected: float) -> tuple[threading.Thread, dict]:
    """A tenth of the nodes stop answering (connections refused) at 30% of the expected
    run and come back at 70%; ``down`` gets how many, and when (perf_counter seconds)."""
    leaving = range(0, count, 10)
    down: dict = {"nodes": len(leaving), "from": 0.0, "to": 0.0}

    def act() -> None:
        time.sleep(0.3 * expected)
        down["from"] = time.perf_counter()
        for i in leaving:
            fleet.kill(i)
        time.sleep(0.4 * expected)
        for i in leaving:
            fleet.revive(i)
        down["to"] = time.perf_counter()

    thread = threading.Thread(target=act, daemon=True)
    thread.start()
    return thread, down


def _idle(counters: list[dict], start: float, end: float) -> dict:
    """Mean idle seconds per node (from the sims' counters; cpu sims have one slot):
    before its first embedding, between embeddings, after its last one."""
    busy = [c for c in counters if c["first_busy"] is not None]
    parts = {"before_first": [max(0.0, c["first_busy"] - start) for c in busy],
             "after_last": [max(0.0, end - c["last_busy"]) for c in busy],
             "between": [max(0.0, c["last_busy"] - c["first_busy"] - c["busy_seconds"])
                         for c in busy]}
    means = {k: sum(v) / len(v) if v else 0.0 for k, v in parts.items()}
    # The run's own ends: before any node works, after every node is done.
    means["run_start"] = min(parts["before_first"], default=0.0)
    means["run_end"] = min(parts["after_last"], default=0.0)
    return means


def _print_profile(state: dict, top: int = 25) -> None:
    """Self time per function of the scheduler's event loop (distributed's sampler)."""
    own: dict[str, int] = {}

    def walk(node: dict) -> None:
        children = node.get("children", {})
        below = sum(c["count"] for c in children.values())
        key = node.get("identifier", "root")
        own[key] = own.get(key, 0) + node["count"] - below
        for child in children.values():
            walk(child)

    walk(state)
    total = sum(own.values()) or 1
    for key, count in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        print(f"    {count / total:6.1%}  {key}")


def large_fleet() -> dict:
    """64 and 256 cpu sims at full speed; 1,024 at an eighth of it (this 2-core machine
    cannot parse 19,000 embeddings/s, see benchmarks/README.md), with a corpus of 40 rows
    a node (a run of ~17 s at capacity: about three batches a slot) and of 120 (~50 s);
    2 and 4 worker processes."""
    points = {}
    for count, rows_per_node, slowdown, processes in ((64, 300, 1.0, 1), (256, 150, 1.0, 2),
                                                      (1024, 40, 8.0, 2), (1024, 120, 8.0, 2)):
        for workers in (2, 4):
            print(f" {count} nodes, {rows_per_node} rows each, {workers} workers", flush=True)
            points[f"{count}x{workers}x{rows_per_node}"] = run_fleet(
                count, workers=workers, rows_per_node=rows_per_node,
                slowdowns=[slowdown] * count, processes=processes)
    return points


def churn_and_mixed() -> dict:
    """64 cpu sims of mixed speeds (1, 1.5, 2 and 4 times slower), and 64 of one speed of
    which a tenth stop answering from 30% to 70% of the run (efficiency against the
    capacity left while they were down; every row written once)."""
    return {
        "mixed_64x2": run_fleet(64, workers=2, rows_per_node=200,
                                slowdowns=[1.0, 1.5, 2.0, 4.0] * 16),
        "churn_64x2": run_fleet(64, workers=2, rows_per_node=300, churn=True),
    }
