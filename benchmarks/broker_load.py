"""Issue 17: the slot broker's own cost per lease at 64 to 10,000 nodes.

The real ``SlotBroker`` (the scheduler plugin's object), in this process, with a busy
fleet: every slot held (2 per node), and workers that each return ``bulk`` leases in one
release and ask for as many in one acquire, as the routers do (their nodes and caps
with the first request only). CPU per lease is the
broker's bookkeeping and choice alone; the scheduler's RPC handling comes on top (the
s7_large_fleet figures include it).
"""

from __future__ import annotations

import asyncio
import itertools
import time
import types

from sollol_dask.cluster._broker import SlotBroker

WORKERS = 4


async def _load(nodes: int, bulk: int, leases: int) -> dict:
    broker = SlotBroker()
    await broker.start(types.SimpleNamespace(handlers={}))
    # Names only: the broker never connects to a node.
    caps = {f"http://127.0.{i // 250}.{i % 250 + 1}:11434": 2 for i in range(nodes)}
    ids = itertools.count()
    held: dict[str, list[str]] = {f"w{w}": [] for w in range(WORKERS)}

    async def acquire(worker: str, count: int) -> int:
        # A worker's nodes go with its first request only, as the routers send them.
        answer = await broker.acquire(worker, None if held[worker] else caps,
                                      leases=[f"{worker}-{next(ids)}" for _ in range(count)])
        granted = [g["lease"] for g in answer["grants"]] if answer else []
        held[worker] += granted
        return len(granted)

    # Fill the fleet: every slot held, spread over the workers.
    workers = itertools.cycle(held)
    while sum(map(len, held.values())) < 2 * nodes:
        await acquire(next(workers), bulk)
    cpu, wall, granted = time.process_time(), time.perf_counter(), 0
    while granted < leases:
        worker = next(workers)
        back, held[worker] = held[worker][:bulk], held[worker][bulk:]
        broker.release(worker, [{"lease": lease, "texts": 8, "seconds": 1.0} for lease in back])
        granted += await acquire(worker, len(back))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"nodes": nodes, "bulk": bulk, "leases": granted,
            "cpu_us_per_lease": cpu / granted * 1e6, "leases_per_cpu_second": granted / cpu,
            "wall_seconds": wall}


def broker_load() -> dict:
    points = {}
    for nodes in (64, 1024, 10_000):
        for bulk in (1, 8):
            point = asyncio.run(_load(nodes, bulk, leases=20_000))
            print(f"  {nodes} nodes, {bulk} lease(s) a request: "
                  f"{point['cpu_us_per_lease']:.0f} us CPU a lease "
                  f"({point['leases_per_cpu_second']:.0f} leases per CPU second)", flush=True)
            points[f"{nodes}x{bulk}"] = point
    return points
