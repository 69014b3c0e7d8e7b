"""Hundreds of simulated nodes for benchmarks: many ``SimNode``s served on one event loop
per process, in one or several child processes.

One process per node does not scale past a few dozen on a small machine (each costs an
interpreter and its memory); a sim node is only a timer and a vector hash, so one loop
hosts hundreds. When one process's CPU is not enough (every node's requests are parsed on
that loop), ``processes=`` spreads the nodes over several.

>>> with SimFleet(["cpu"] * 256, slowdowns=[1.0, 2.0] * 128, processes=2) as fleet:
...     fleet.urls[:2], fleet.counters()[0]["max_inflight"]

Each child reads commands on stdin and answers one JSON line on stdout:
``kill N`` / ``revive N`` (node N of that process stops or comes back on its port),
``counters`` (each node's counters and the process's CPU seconds), ``stop``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

from ._server import Faults, SimNode

# Run as a module path would warn (the package imports this module first).
_CHILD = "import sys; from sollol_dask.testing.sim._fleet import main; main(sys.argv[1:])"
_FIELDS = ("requests", "texts", "errors", "inflight", "max_inflight", "busy_seconds", "first_busy",
           "last_busy")


async def _serve(args) -> None:
    nodes = []
    for profile, slowdown in zip(args.profiles.split(","), args.slowdowns.split(",")):
        node = SimNode(profile, dimension=args.dimension, load_seconds=0.0,
                       faults=Faults(slowdown=float(slowdown)))
        await node.serve()
        nodes.append(node)
    print(json.dumps({"urls": [n.url for n in nodes]}), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode().split():
        command, *rest = line
        if command == "stop":
            break
        if command == "kill":
            await nodes[int(rest[0])]._close()
            answer: object = "ok"
        elif command == "revive":
            await nodes[int(rest[0])].serve()
            answer = "ok"
        elif command == "counters":
            answer = {"cpu_seconds": time.process_time(), "nodes": [
                {k: getattr(n.counters, k) for k in _FIELDS} for n in nodes]}
        else:
            answer = f"unknown command {command!r}"
        print(json.dumps(answer), flush=True)
    for node in nodes:
        await node._close()


class SimFleet:
    """``len(profiles)`` sim nodes spread over ``processes`` child processes.

    ``slowdowns`` (one per node, default 1.0) multiply each node's model time: a fleet of
    mixed speeds. ``kill(i)``/``revive(i)`` take node ``i`` out and back (same port), as
    a scenario that adds and removes nodes during a run does.
    """

    def __init__(self, profiles: list[str], *, slowdowns: list[float] | None = None,
                 processes: int = 1, dimension: int = 768) -> None:
        slowdowns = slowdowns or [1.0] * len(profiles)
        if len(slowdowns) != len(profiles):
            raise ValueError("one slowdown per node")
        self.profiles = list(profiles)
        self.slowdowns = list(slowdowns)
        self._procs: list[subprocess.Popen] = []
        self._where: list[tuple[int, int]] = []  # node -> (process, index there)
        self.urls: list[str] = []
        shares = [range(p, len(profiles), processes) for p in range(processes)]
        try:
            for share in shares:
                if not share:
                    continue
                proc = subprocess.Popen(
                    [sys.executable, "-c", _CHILD,
                     "--profiles", ",".join(profiles[i] for i in share),
                     "--slowdowns", ",".join(str(slowdowns[i]) for i in share),
                     "--dimension", str(dimension)],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
                self._procs.append(proc)
            placed: dict[int, str] = {}
            for p, (proc, share) in enumerate(zip(self._procs, shares)):
                urls = json.loads(proc.stdout.readline())["urls"]
                for k, (i, url) in enumerate(zip(share, urls)):
                    placed[i] = url
                    self._where.append((i, p, k))
            self.urls = [placed[i] for i in range(len(profiles))]
            self._where = [(p, k) for _, p, k in sorted(self._where)]
        except BaseException:
            self.stop()
            raise

    def _ask(self, proc: subprocess.Popen, command: str):
        proc.stdin.write(command + "\n")
        proc.stdin.flush()
        return json.loads(proc.stdout.readline())

    def kill(self, node: int) -> None:
        p, k = self._where[node]
        self._ask(self._procs[p], f"kill {k}")

    def revive(self, node: int) -> None:
        p, k = self._where[node]
        self._ask(self._procs[p], f"revive {k}")

    def counters(self) -> list[dict]:
        """Each node's counters, in the order of ``urls``."""
        answers = [self._ask(proc, "counters")["nodes"] for proc in self._procs]
        return [answers[p][k] for p, k in self._where]

    def cpu_seconds(self) -> float:
        """CPU time the fleet's processes have used so far (user + system)."""
        return sum(self._ask(proc, "counters")["cpu_seconds"] for proc in self._procs)

    def stop(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                try:
                    proc.stdin.write("stop\n")
                    proc.stdin.flush()
                except (BrokenPipeError, OSError):
                    pass
        for proc in self._procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
            for stream in (proc.stdin, proc.stdout):
                if stream:
                    stream.close()
        self._procs = []

    def __enter__(self) -> SimFleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="serve many sim nodes on one event loop")
    parser.add_argument("--profiles", required=True, help="comma-separated, one per node")
    parser.add_argument("--slowdowns", required=True, help="comma-separated, one per node")
    parser.add_argument("--dimension", type=int, default=768)
    asyncio.run(_serve(parser.parse_args(argv)))


