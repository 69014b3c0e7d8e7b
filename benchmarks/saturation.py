"""Issue 4: does the fleet stay busy? sollol_dask against two baselines, side by side.

Each scenario runs simulated nodes of known speed, so the fleet's capacity (the physical
limit) is exact; efficiency = achieved texts/s / capacity. Methods, all on the same texts:
  seed:        one text per request, a ThreadPoolExecutor with 2 threads per node, the
               texts split evenly over the nodes (what today's tools do);
  round_robin: batches of 64 sent round-robin over the nodes from 2 Dask worker
               processes, each with its own cap of 2 per node;
  sollol_dask: embed_dataframe on the same 2 worker processes.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time

import dask.dataframe as dd
import httpx
import numpy as np
import orjson
import pandas as pd
from distributed import Client, LocalCluster, wait

import sollol_dask as sd
from sollol_dask.testing import PROFILES, SimProcess

from ._common import LARGEST_BATCH, MODEL, capacity, texts

WORKERS = 2


def _seed(urls: list[str], items: list[str]) -> None:
    share = np.array_split(np.arange(len(items)), len(urls))

    def one(url: str, client: httpx.Client, i: int) -> None:
        r = client.post(url + "/api/embed", content=orjson.dumps({"model": MODEL, "input": items[i]}))
        r.raise_for_status()

    clients = {u: httpx.Client(timeout=600) for u in urls}
    # Interleaved over the nodes, so each has about 2 of the threads at any time.
    order = [(u, int(i)) for k in range(max(len(idx) for idx in share))
             for u, idx in zip(urls, share) if k < len(idx) for i in [idx[k]]]
    with concurrent.futures.ThreadPoolExecutor(2 * len(urls)) as pool:
        jobs = [pool.submit(one, u, clients[u], i) for u, i in order]
        for job in jobs:
            job.result()


def _round_robin_chunk(urls: list[str], chunk: list[str], offset: int) -> int:
    """One Dask task: batches of 64 round-robin over nodes, at most 2 in flight per node
    from this worker (a per-worker cap, as a naive router would keep)."""
    batches = [chunk[i:i + 64] for i in range(0, len(chunk), 64)]
    locks = {u: threading.Semaphore(2) for u in urls}
    client = httpx.Client(timeout=600)

    def send(k: int) -> None:
        url = urls[(offset // 64 + k) % len(urls)]
        with locks[url]:
            for _ in range(20):  # retry on the same node, as a naive client does
                try:
                    r = client.post(url + "/api/embed",
                                    content=orjson.dumps({"model": MODEL, "input": batches[k]}))
                    if r.status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.5)

    with concurrent.futures.ThreadPoolExecutor(2 * len(urls)) as pool:
        list(pool.map(send, range(len(batches))))
    return len(chunk)


def _round_robin(client: Client, urls: list[str], items: list[str]) -> None:
    size = 512
    chunks = [items[i:i + size] for i in range(0, len(items), size)]
    client.gather(client.map(_round_robin_chunk, [urls] * len(chunks), chunks,
                             range(0, len(items), size), pure=False))


def _sollol_setup(client: Client, urls: list[str]) -> sd.Embedder:
    """One-time set-up a long run pays once, kept out of the timing: the fleet check, the
    plugins, and each worker's router checking the fleet (a long-lived cluster keeps its
    routers between runs). ``cold_start`` in the results measures what this costs."""
    emb = sd.Embedder(urls, model=MODEL)
    emb.check_fleet()
    name = emb.register(client)
    client.run(lambda dask_worker: dask_worker.plugins[name].router.check_fleet() and None)
    return emb


def _sollol(client: Client, emb: sd.Embedder, items: list[str]) -> dict:
    """The vectors stay on the workers (``persist``), as the baselines keep theirs:
    fleet use is measured, not the transfer of every vector to this process."""
    ddf = dd.from_pandas(pd.DataFrame({"text": items}), chunksize=512)
    result = client.persist(emb.embed_dataframe(ddf, "text"))
    wait(result)
    del result
    return client.run_on_scheduler(
        lambda dask_scheduler: dask_scheduler.plugins["sollol-dask-slots"].state())


class _Fleet:
    def __init__(self, profiles, dim: int = 768) -> None:
        self.profiles = profiles
        self.nodes = [SimProcess(p, "--load-seconds", "0", "--dimension", str(dim)) for p in profiles]
        self.urls = [n.url for n in self.nodes]

    def restart(self, i: int) -> None:
        port = self.urls[i].rsplit(":", 1)[1]
        self.nodes[i] = SimProcess(self.profiles[i], "--load-seconds", "0", "--port", port)

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()


def run_scenario(profiles, n: int, *, methods=("seed", "round_robin", "sollol_dask"),
                 outage: tuple[int, float, float] | None = None) -> dict:
    """Run each method on fresh nodes; ``outage=(node, start, end)`` kills that node at
    ``start`` and restarts it at ``end`` (fractions of the expected run time)."""
    items = texts(n)
    cap = capacity(profiles, items)
    out: dict = {"nodes": list(profiles), "texts": n, "capacity": cap}
    with LocalCluster(n_workers=WORKERS, threads_per_worker=4, processes=True,
                      host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster) as client:
        for method in methods:
            fleet = _Fleet(profiles)
            extra: dict = {}
            try:
                setup_started = time.perf_counter()
                emb = _sollol_setup(client, fleet.urls) if method == "sollol_dask" else None
                setup = time.perf_counter() - setup_started
                run = {"seed": lambda: _seed(fleet.urls, items),
                       "round_robin": lambda: _round_robin(client, fleet.urls, items),
                       "sollol_dask": lambda: extra.update(
                           broker=_sollol(client, emb, items))}[method]
                down = _outage(fleet, outage, n / cap) if outage else None
                started, wall_start = time.perf_counter(), time.time()
                run()
                seconds = time.perf_counter() - started
                if down:
                    down.join()
                idle = _idle_time(fleet, wall_start, wall_start + seconds)
            finally:
                fleet.stop()
            effective = cap
            if outage:
                node, start, end = outage
                lost = (PROFILES[profiles[node]].capacity(items, LARGEST_BATCH)
                        * (end - start) * (n / cap))
                effective = cap - lost / seconds
            out[method] = {"seconds": seconds, "rate": n / seconds,
                           "efficiency": n / seconds / effective, "idle": idle}
            if emb is not None:
                out[method]["setup_seconds"] = setup
            if "broker" in extra:
                out[method]["max_inflight_seen"] = {
                    url: s["max_inflight_seen"] for url, s in extra["broker"].items()
                    if url in fleet.urls}
            print(f"  {method:<12} {n / seconds:8.1f} texts/s  efficiency "
                  f"{out[method]['efficiency']:.2f}  node idle (s, mean): before first "
                  f"{idle['before_first']:.2f}, between {idle['between']:.2f}, after last "
                  f"{idle['after_last']:.2f}", flush=True)
    return out


def _idle_time(fleet: _Fleet, start: float, end: float) -> dict:
    """Where the nodes' idle time went, mean seconds per node, from the sims' own counters:
    before their first embedding, between embeddings, after their last one."""
    parts = {"before_first": [], "between": [], "after_last": []}
    for url, profile in zip(fleet.urls, fleet.profiles):
        try:
            c = httpx.get(url + "/sim/counters", timeout=5).json()
        except httpx.TransportError:  # a node restarted after an outage: no whole record
            continue
        if c["first_busy"] is None:
            continue
        slots = PROFILES[profile].slots
        parts["before_first"].append(max(0.0, c["first_busy"] - start))
        parts["after_last"].append(max(0.0, end - c["last_busy"]))
        parts["between"].append(max(0.0, c["last_busy"] - c["first_busy"]
                                    - c["busy_seconds"] / slots))
    return {k: sum(v) / len(v) if v else 0.0 for k, v in parts.items()}


def _outage(fleet: _Fleet, outage, expected: float) -> threading.Thread:
    node, start, end = outage

    def act() -> None:
        time.sleep(start * expected)
        fleet.nodes[node].kill()
        time.sleep((end - start) * expected)
        fleet.restart(node)

    thread = threading.Thread(target=act, daemon=True)
    thread.start()
    return thread


def identical() -> dict:
    return run_scenario(("gpu",) * 4, 12000)


def heterogeneous() -> dict:
    # 1 GPU-like node 10x faster than 3 CPU-like ones (cpu profile slowed to 1/10 of gpu).
    return run_scenario(("gpu", "cpu", "cpu", "cpu"), 4000)


def node_outage() -> dict:
    return run_scenario(("gpu",) * 4, 12000, outage=(0, 0.3, 0.7),
                        methods=("round_robin", "sollol_dask"))


def scale_out() -> dict:
    points = {}
    for count in (2, 4, 8, 16):
        print(f" {count} nodes", flush=True)
        points[count] = run_scenario(("cpu",) * count, 300 * count,
                                     methods=("round_robin", "sollol_dask"))
    return points
