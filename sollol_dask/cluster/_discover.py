"""``discover``: the discovery facade, with the one source that needs Dask: each worker's
own host, probed from that worker and reported under the address the other workers
reach it by (the host of the worker's own address), so "one Ollama beside each worker"
needs no list.

A worker asks its own host address at the discovery ports and nothing else; a server it
finds only on 127.0.0.1 (Ollama's default bind) cannot serve the other workers and is
reported with what to change, not used.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from urllib.parse import urlsplit

from ..discovery import Discovery, DiscoverySpec, Server, probe, scan
from ..discovery._scan import is_this_host
from .._exceptions import NoNodeAvailableError
from .._node import Node
from ..engine._router import Router
from ._clients import current_client
from ._membership import publish

logger = logging.getLogger(__name__)


def discover(model: str | None = None, *, cidr: Iterable[str] | str = (),
             hosts: Iterable[str] | str = (), ports: Iterable[int] | int | None = None,
             env: bool = True, local: bool = True, workers: bool = True, client=None,
             digest: str | None = None, timeout: float | None = None,
             connect_timeout: float | None = None, spec: DiscoverySpec | None = None,
             dimensions: int | None = None) -> Discovery:
    """Find embedding servers where you allow it; returns them with what each serves.

    >>> found = discover("nomic-embed-text", cidr="192.168.1.0/24")
    >>> print(found)                 # URL, server, model digest, loaded, VRAM, slots
    >>> emb = Embedder(found.nodes, model="nomic-embed-text")

    Sources (see docs/discovery.md for the addresses each one may contact):
    ``env`` (``SOLLOL_NODES``, ``OLLAMA_HOST``), ``local`` (127.0.0.1 at ``ports``,
    default 11434 and 8080), ``cidr`` and ``hosts`` (only when given; a host name stands
    for all its DNS addresses), ``workers`` (with a Dask client given or current: each
    worker's host at ``ports``, probed from that worker). With ``model``, ``nodes`` holds
    only the servers that serve it with the fleet's digest (``digest`` pins one) and
    dimension; the others are in ``left_out`` with the reason.
    """
    if spec is None:
        changes = {k: v for k, v in (("ports", ports), ("timeout", timeout),
                                     ("connect_timeout", connect_timeout)) if v is not None}
        spec = DiscoverySpec(env=env, local=local, cidr=cidr, hosts=hosts, workers=workers,
                             digest=digest, **changes)
    extra: list[Server] = []
    notes: list[str] = []
    if spec.workers:
        client = client or current_client()
        if client is not None:
            extra, notes = beside_workers(client, spec, model, dimensions)
    found = _run(scan(model, spec, extra=extra, dimensions=dimensions))
    found.not_embedding += notes
    return found


def beside_workers(client, spec: DiscoverySpec, model: str | None,
                   dimensions: int | None = None) -> tuple[list[Server], list[str]]:
    """Servers beside each worker (found by that worker), and notes on unusable ones."""
    answers = client.run(_probe_beside, spec, model, dimensions)
    servers, notes = [], []
    for found, said in answers.values():
        servers += found
        notes += said
    return servers, notes


async def _probe_beside(spec: DiscoverySpec, model: str | None, dimensions: int | None,
                        dask_worker=None) -> tuple[list[Server], list[str]]:
    host = urlsplit(dask_worker.address).hostname or "127.0.0.1"
    mine = dataclasses.replace(spec, env=False, local=False, cidr=(), hosts=(host,))
    found, *_ = await probe(mine.candidates(), model, mine, dimensions=dimensions)
    for server in found:
        server.source = f"worker {dask_worker.address}"
    notes = []
    if not is_loopback(host):  # a server bound to 127.0.0.1 only: no use to the others
        inside = dataclasses.replace(mine, hosts=("127.0.0.1",))
        alone, *_ = await probe(inside.candidates(), model, inside, dimensions=dimensions)
        ports = {urlsplit(s.url).port for s in found}
        notes += [f"{s.url} on worker {dask_worker.address} listens on 127.0.0.1 only: "
                  "other workers cannot reach it; start it with OLLAMA_HOST=0.0.0.0"
                  for s in alone if urlsplit(s.url).port not in ports]
    return found, notes


def is_loopback(host: str) -> bool:
    return host == "localhost" or (is_this_host(host) and host.startswith(("127.", "::1")))


def _run(coro):
    """Run a discovery coroutine from sync code, also where a loop already runs (Jupyter)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    import concurrent.futures
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@dataclasses.dataclass(frozen=True)
class FleetSearch:
    """How an Embedder's fleet was found, to find it again."""

    spec: DiscoverySpec
    dimensions: int | None = None


def discover_fleet(model: str, spec: DiscoverySpec, dimensions: int | None = None
                   ) -> tuple[tuple[Node, ...], FleetSearch]:
    """The nodes ``Embedder(nodes="auto")`` starts with; fails naming what was seen."""
    found = discover(model, spec=spec, dimensions=dimensions)
    if not found.nodes:
        raise NoNodeAvailableError(
            f"discovery found no node serving {model!r}; start one, or say where to look "
            f"(cidr=, hosts=, ports=). What it saw:\n{found}",
            {url: why for url, why in found.left_out.items()})
    logger.info("discovered %d node(s) for %s in %.2f s", len(found.nodes), model, found.seconds)
    return found.nodes, FleetSearch(spec, dimensions)


class DiscoveredFleet:
    """An Embedder's discovered fleet: the nodes found so far, and where new ones go
    (this process's router, and every cluster the Embedder was registered on)."""

    def __init__(self, spec: DiscoverySpec, model: str, nodes: Sequence[Node],
                 router: Callable[[], Router | None], dimensions: int | None = None) -> None:
        self.spec, self.model, self.dimensions = spec, model, dimensions
        self.initial = tuple(nodes)
        self.nodes = list(nodes)
        self._router = router
        self._clients: dict[int, tuple[object, str]] = {}  # id -> (client, plugin name)
        self._lock = threading.Lock()

    def attach(self, client, name: str) -> None:
        """``client``'s cluster runs this fleet as plugin ``name``: tell it who joined."""
        with self._lock:
            self._clients[id(client)] = (client, name)
            joined = self.nodes[len(self.initial):]
        if joined:
            publish(client, name, joined)

    def find(self) -> list[Node]:
        """One round of discovery (from a worker of a registered cluster, if any)."""
        with self._lock:
            clients = [c for c, _ in self._clients.values() if c.status == "running"]
        spec = dataclasses.replace(self.spec, workers=self.spec.workers and bool(clients))
        found = discover(self.model, spec=spec, client=clients[0] if clients else None,
                         dimensions=self.dimensions)
        return list(found.nodes)

    def found(self, nodes: Sequence[Node]) -> bool:
        """Add the nodes not known yet (checked by each router before they get work)."""
        with self._lock:
            known = {n.key for n in self.nodes}
            new = [n for n in nodes if n.key not in known]
            self.nodes += new
            clients = list(self._clients.items())
        if not new:
            return True
        logger.info("discovered %s", ", ".join(n.name for n in new))
        router = self._router()
        if router is not None:
            router.add_nodes(new)
        for key, (client, name) in clients:
            try:
                publish(client, name, new)
            except Exception as err:  # that cluster is gone: forget it
                logger.debug("could not publish new nodes to %s: %s", client, err)
                with self._lock:
                    self._clients.pop(key, None)
        return True
