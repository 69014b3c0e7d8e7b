"""The scan: ask every candidate address at once (bounded), identify what answers, count
each server once, and keep those that serve the model with the fleet's digest and
dimension.

Bounded in time as well as in width: an address gets ``connect_timeout`` to accept a
connection and ``timeout`` for its whole conversation, and at most ``concurrency``
addresses are asked at once, so a /24 whose hosts never answer takes about one
``timeout``, not 254 of them. HTTP proxies from the environment are never used (the
scan talks to the addresses themselves), nor are redirects followed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import time
from urllib.parse import urlsplit
from collections.abc import Callable, Iterable, Sequence

import aiohttp
import orjson

from .._node import Node
from ..policy._identity import Reference, choose_reference, mismatch
from ..policy._limits import PROBE_BYTES
from ._identify import Get, NotEmbeddingServer, Server, identify
from ._sources import (WELL_KNOWN_PORTS, Candidate, cidr_hosts, from_env, host_list,
                       local_ports, resolve)


@dataclasses.dataclass(frozen=True)
class DiscoverySpec:
    """Where to look (each source opt-in or local) and how long to wait.

    ``env``: ``SOLLOL_NODES``/``OLLAMA_HOST``; ``local``: 127.0.0.1 at ``ports``;
    ``cidr``: ranges such as ``"192.168.1.0/24"``; ``hosts``: names (every DNS address),
    IPs, ``host:port``; ``workers``: on a Dask cluster, each worker's own host at
    ``ports``, probed from that worker. ``digest``: keep only this build of the model
    (a prefix is enough); default: the digest most servers have.
    """

    env: bool = True
    local: bool = True
    ports: tuple[int, ...] = WELL_KNOWN_PORTS
    cidr: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    workers: bool = True
    connect_timeout: float = 1.0
    timeout: float = 3.0
    concurrency: int = 256
    digest: str | None = None

    def __post_init__(self) -> None:
        for name in ("ports", "cidr", "hosts"):
            value = getattr(self, name)
            if isinstance(value, (str, int)):
                value = (value,)
            object.__setattr__(self, name, tuple(value))

    def candidates(self, environ: dict | None = None) -> list[Candidate]:
        found: list[Candidate] = []
        if self.env:
            found += from_env(environ)
        if self.local:
            found += local_ports(self.ports)
        found += cidr_hosts(self.cidr, self.ports)
        found += host_list(self.hosts, self.ports)
        return found


@dataclasses.dataclass
class Discovery:
    """What a scan found: ``nodes`` to embed with, and everything else it saw."""

    model: str | None
    servers: list[Server]  # every distinct server that answered, kept or not
    left_out: dict[str, str]  # url -> why it is not in ``nodes``
    reference: Reference | None
    seconds: float
    asked: int  # addresses asked
    silent: int  # of which did not answer (refused, timed out)
    not_embedding: list[str]  # answered HTTP, but as no embedding server we know

    @property
    def kept(self) -> list[Server]:
        return [s for s in self.servers if s.url not in self.left_out]

    @property
    def nodes(self) -> tuple[Node, ...]:
        return tuple(Node(s.url, api=s.api) for s in self.kept)

    def __str__(self) -> str:
        from ._table import render
        return render(self)


def _client_get(session: aiohttp.ClientSession, url: str) -> Get:
    async def get(method: str, path: str, payload) -> tuple[int, object]:
        async with session.request(method, url + path, data=None if payload is None
                                   else orjson.dumps(payload), allow_redirects=False,
                                   headers={"Content-Type": "application/json"}) as resp:
            body = await resp.content.read(PROBE_BYTES)
            try:
                return resp.status, orjson.loads(body)
            except orjson.JSONDecodeError:
                return resp.status, None
    return get


async def probe(candidates: Sequence[Candidate], model: str | None, spec: DiscoverySpec, *,
                getaddrinfo=None, dimensions: int | None = None,
                get_for: Callable[[aiohttp.ClientSession, str], Get] = _client_get
                ) -> tuple[list[Server], int, int, list[str]]:
    """Identify what answers at each candidate: (servers, asked, silent, not embedding)."""
    resolved = await asyncio.gather(*(resolve(c, getaddrinfo) for c in candidates))
    unique: dict[tuple, Candidate] = {}
    for cand in (c for group in resolved for c in group):
        unique.setdefault((cand.scheme, _canonical(cand.host), cand.port, cand.path), cand)
    limit = asyncio.Semaphore(spec.concurrency)
    timeout = aiohttp.ClientTimeout(total=spec.timeout, sock_connect=spec.connect_timeout)
    connector = aiohttp.TCPConnector(limit=spec.concurrency, use_dns_cache=False)
    silent = 0
    others: list[str] = []

    async def ask(cand: Candidate) -> Server | None:
        nonlocal silent
        async with limit:
            try:
                server = await asyncio.wait_for(
                    identify(get_for(session, cand.url), cand.url, model, dimensions),
                    spec.timeout)
            except NotEmbeddingServer:
                others.append(cand.url)
                return None
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError):
                silent += 1
                return None
        server.source, server.addresses = cand.source, [cand.url]
        return server

    async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                     trust_env=False) as session:
        found = await asyncio.gather(*(ask(c) for c in unique.values()))
    return [s for s in found if s is not None], len(unique), silent, others


def merge(servers: Iterable[Server], local: Callable[[str], bool]) -> list[Server]:
    """Each server once: two addresses of this host (127.0.0.1, ::1, its LAN address)
    at one port that give the same answers are one server bound to several addresses.
    Remote addresses are never merged on their answers: hosts built from one image can
    answer identically."""
    kept: list[Server] = []
    for server in servers:
        host, port = _host_port(server.url)

        def same(other: Server) -> bool:
            other_host, other_port = _host_port(other.url)
            if other_port != port:
                return False
            if _canonical(other_host) == _canonical(host):  # found twice (a worker, a range)
                return True
            return local(host) and local(other_host) and other.fingerprint() == server.fingerprint()

        twin = next((k for k in kept if same(k)), None)
        if twin is None:
            kept.append(server)
        else:
            twin.addresses += [a for a in server.addresses if a not in twin.addresses]
    return kept


def select(servers: list[Server], model: str | None, digest: str | None
           ) -> tuple[dict[str, str], Reference | None]:
    """Which servers cannot join a fleet for ``model``, and the fleet's reference."""
    if not model:
        return {}, None
    left_out: dict[str, str] = {}
    serving = []
    for s in servers:
        if s.model is None or s.info is None:
            names = ", ".join(m.name for m in s.models[:5]) or "no models"
            left_out[s.url] = f"does not serve {model!r} (has: {names})"
        elif digest and not (s.info.digest or "").startswith(digest):
            left_out[s.url] = (f"serves {model!r} with digest {(s.info.digest or '?')[:12]}, "
                               f"not the {digest[:12]} asked for")
        else:
            serving.append(s)
    infos = {s.url: s.info for s in serving}
    reference = choose_reference([s.url for s in serving], infos)
    for s in serving:
        if reference is not None and s.info.dimension is not None:
            why = mismatch(s.info, reference, model)
            if why:
                left_out[s.url] = why
    return left_out, reference


async def scan(model: str | None, spec: DiscoverySpec, *, extra: Sequence[Server] = (),
               environ: dict | None = None, getaddrinfo=None, dimensions: int | None = None,
               local: Callable[[str], bool] | None = None) -> Discovery:
    """Discover servers from ``spec``'s sources (plus ``extra``, found elsewhere)."""
    started = time.perf_counter()
    found, asked, silent, others = await probe(spec.candidates(environ), model, spec,
                                               getaddrinfo=getaddrinfo, dimensions=dimensions)
    servers = merge([*found, *extra], local or is_this_host)
    left_out, reference = select(servers, model, spec.digest)
    return Discovery(model, servers, left_out, reference, time.perf_counter() - started,
                     asked + sum(len(s.addresses) for s in extra), silent, others)


def is_this_host(host: str) -> bool:
    """Loopback, or an address of one of this machine's interfaces."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host == "localhost"
    if ip.is_loopback or ip.is_unspecified:
        return True
    return str(ip) in _interface_addresses()


def _interface_addresses() -> set[str]:
    try:
        import psutil  # a dependency of distributed
    except ImportError:
        return set()
    return {a.address.split("%")[0] for addrs in psutil.net_if_addrs().values() for a in addrs}


def _canonical(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return host.lower()


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
