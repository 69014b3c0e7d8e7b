"""Where discovery may look: candidate addresses from each opt-in source.

Every source says exactly which addresses it yields, and nothing else is contacted:

- ``env``: the servers ``SOLLOL_NODES`` and ``OLLAMA_HOST`` name (as Ollama reads
  ``OLLAMA_HOST``: no scheme, no port, ``0.0.0.0`` or an empty host meaning this host,
  IPv6 in brackets or bare);
- ``local``: 127.0.0.1 at the well-known ports (Ollama 11434, llama-server 8080, and any
  the user adds);
- ``cidr``: every host address of the ranges given, at those ports;
- ``hosts``: the hosts given (``name``, ``name:port``, an IP), a name standing for every
  address DNS returns for it (a Kubernetes headless Service), at those ports unless a
  port is given.

Pure functions except ``resolve`` (the system resolver: DNS or /etc/hosts).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import os
import socket
from collections.abc import Iterable

from .._exceptions import ConfigurationError

WELL_KNOWN_PORTS = (11434, 8080)  # Ollama, llama-server
MAX_ADDRESSES = 4096  # a /20: larger ranges are refused (a typo of a prefix, most likely)
_THIS_HOST = {"", "0.0.0.0", "::", "[::]"}


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One address to ask: ``scheme://host:port`` (host an IP or a name), and why."""

    scheme: str
    host: str
    port: int
    source: str  # "env", "local", "cidr", "hosts", "worker <address>"
    path: str = ""

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.path}"


def ollama_host(text: str, source: str = "env") -> Candidate:
    """``OLLAMA_HOST`` read the way Ollama's own client reads it.

    ``http://h`` without a port means port 80 and ``https://h`` port 443, as in Ollama;
    a value without a scheme gets 11434; ``0.0.0.0``, ``::`` or no host at all (``:11434``)
    mean this host (127.0.0.1); ``::1`` and ``[::1]:11434`` are IPv6.
    """
    text = text.strip()
    scheme, sep, rest = text.partition("://")
    default_port = 11434
    if not sep:
        scheme, rest = "http", text
    elif scheme == "http":
        default_port = 80
    elif scheme == "https":
        default_port = 443
    else:
        raise ConfigurationError(f"{source}: {text!r} is not an http:// or https:// address")
    hostport, slash, path = rest.partition("/")
    host, port = _split_host_port(hostport)
    if port is None:
        port = default_port
    if host in _THIS_HOST:
        host = "127.0.0.1"
    path = ("/" + path).rstrip("/") if slash else ""
    return Candidate(scheme, host.strip("[]"), port, source, path)


def _split_host_port(hostport: str) -> tuple[str, int | None]:
    """Go's net.SplitHostPort, falling back (as Ollama does) to the whole text as a host."""
    if hostport.startswith("["):
        host, bracket, tail = hostport[1:].partition("]")
        if bracket and tail.startswith(":") and tail[1:].isdigit():
            return host, _port(tail[1:], hostport)
        return host, None
    if hostport.count(":") == 1:
        host, _, port = hostport.partition(":")
        if port.isdigit():
            return host, _port(port, hostport)
    try:  # bare IPv6 (``::1``) or a name without a port
        return str(ipaddress.ip_address(hostport)), None
    except ValueError:
        return hostport, None


def _port(text: str, whole: str) -> int:
    port = int(text)
    if not 0 < port < 65536:
        raise ConfigurationError(f"{whole!r}: port {port} is out of range")
    return port


def from_env(environ: dict | None = None) -> list[Candidate]:
    """``SOLLOL_NODES`` (URLs separated by commas or spaces), then ``OLLAMA_HOST``."""
    environ = os.environ if environ is None else environ
    found = []
    for item in (environ.get("SOLLOL_NODES") or "").replace(",", " ").split():
        found.append(ollama_host(item, "SOLLOL_NODES"))
    if environ.get("OLLAMA_HOST") is not None:
        found.append(ollama_host(environ["OLLAMA_HOST"], "OLLAMA_HOST"))
    return found


def local_ports(ports: Iterable[int]) -> list[Candidate]:
    return [Candidate("http", "127.0.0.1", p, "local") for p in ports]


def cidr_hosts(ranges: Iterable[str], ports: Iterable[int]) -> list[Candidate]:
    """Every host address of ``ranges`` at every port (a /32 or /128 is that address)."""
    ports = list(ports)
    found = []
    total = 0
    for text in ranges:
        try:
            net = ipaddress.ip_network(text.strip(), strict=False)
        except ValueError as exc:
            raise ConfigurationError(f"--cidr {text!r}: {exc}") from None
        total += net.num_addresses
        if total > MAX_ADDRESSES:
            raise ConfigurationError(
                f"--cidr {text!r}: {net.num_addresses} addresses; discovery scans at most "
                f"{MAX_ADDRESSES} in all (a /20): give a smaller range")
        hosts = [net.network_address] if net.num_addresses == 1 else list(net.hosts())
        found += [Candidate("http", str(ip), p, "cidr") for ip in hosts for p in ports]
    return found


def host_list(hosts: Iterable[str], ports: Iterable[int]) -> list[Candidate]:
    """``host``, ``host:port``, ``[v6]:port`` or a URL; without a port, every port given."""
    ports = list(ports)
    found = []
    for text in hosts:
        text = text.strip()
        if not text:
            continue
        if "://" in text:
            found.append(ollama_host(text, "hosts"))
            continue
        host, port = _split_host_port(text)
        found += [Candidate("http", host, p, "hosts") for p in ([port] if port else ports)]
    return found


async def resolve(candidate: Candidate, getaddrinfo=None) -> list[Candidate]:
    """The candidate at every address its name has (an IP stays itself; an https://
    name stays a name, which its certificate is for)."""
    if candidate.scheme == "https":
        return [candidate]
    try:
        ipaddress.ip_address(candidate.host)
        return [candidate]
    except ValueError:
        pass
    getaddrinfo = getaddrinfo or asyncio.get_running_loop().getaddrinfo
    try:
        infos = await getaddrinfo(candidate.host, candidate.port, type=socket.SOCK_STREAM)
    except OSError:
        return []
    addresses = dict.fromkeys(info[4][0] for info in infos)  # ordered, once each
    return [dataclasses.replace(candidate, host=a) for a in addresses]
