"""Fleets whose members change during a run: the scheduler's list of the nodes that
joined each fleet, and the client-side loop that rediscovers them.

A discovered fleet is named by its discovery settings (``RouterSettings.fleet``), not by
its nodes, so the WorkerPlugin (one router per worker) stays the same as nodes join: no
router restarts, no measured speed lost. The client rediscovers every N seconds and adds
what is new to the ``MembershipRegistry`` on the scheduler; each worker's plugin reads
it every second and lets the new nodes join its router (checked there: model, digest,
dimension, warm-up); the slot broker hears of them with the router's next lease request,
so their caps hold cluster-wide from their first batch. Workers that start later read
the same list. Nodes that vanish are not removed here: they fail, and the router ejects
them as it ejects any node that stops answering.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from distributed.diagnostics.plugin import SchedulerPlugin

from .._node import Node

logger = logging.getLogger(__name__)
MEMBERS_NAME = "sollol-dask-members"


class MembershipRegistry(SchedulerPlugin):
    """Nodes that joined each fleet during its run, by fleet (the plugin's name)."""

    name = MEMBERS_NAME
    idempotent = True

    async def start(self, scheduler) -> None:
        self.fleets: dict[str, list[dict]] = {}
        scheduler.handlers["sollol_members_get"] = self.get

    def add(self, fleet: str, nodes: list[dict]) -> int:
        known = self.fleets.setdefault(fleet, [])
        urls = {n["url"] for n in known}
        known += [n for n in nodes if n["url"] not in urls]
        return len(known)

    def get(self, fleet: str) -> list[dict]:
        return list(self.fleets.get(fleet, ()))


def node_to_wire(node: Node) -> dict:
    """A discovered node as msgpack-able data (discovered nodes carry no headers)."""
    return {"url": node.url, "api": node.api, "max_inflight": node.max_inflight,
            "weight": node.weight}


def publish(client, fleet: str, nodes: Sequence[Node]) -> None:
    """Add ``nodes`` to ``fleet`` on the cluster of ``client`` (the workers follow)."""
    wire = [node_to_wire(n) for n in nodes if not n.headers]

    def add(dask_scheduler=None):
        return dask_scheduler.plugins[MEMBERS_NAME].add(fleet, wire)

    client.run_on_scheduler(add)


async def read_members(worker, fleet: str) -> list[Node]:
    """The nodes that joined ``fleet``, as the scheduler lists them (on a worker)."""
    return [Node(**item) for item in await worker.scheduler.sollol_members_get(fleet=fleet)]


class Rediscovery:
    """Calls ``find()`` every ``every`` seconds on a daemon thread and hands the nodes it
    returns to ``joined`` (which adds the new ones); stops on ``stop()``. A failed round
    is logged and the next one runs anyway."""

    def __init__(self, find: Callable[[], Sequence[Node]],
                 joined: Callable[[Sequence[Node]], bool], every: float) -> None:
        self._find, self._joined, self.every = find, joined, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sollol-dask-rediscovery",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                if not self._joined(self._find()):
                    return  # its Embedder is gone
            except Exception as err:  # a round that failed: the next one may not
                logger.warning("sollol-dask rediscovery failed: %s", err)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(5)
