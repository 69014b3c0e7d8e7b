"""Header values as configuration: checked, registered for redaction, sealed in pickles,
or read from the environment where the requests are sent.

A literal header value travels with the configuration: in the WorkerPlugin the scheduler
keeps (to give to workers that join later) and in task graphs. There it is sealed, so a
DEBUG log of those bytes does not show it, but anyone who can reach the scheduler can
still unpickle it. :class:`FromEnv` keeps a token off the cluster altogether: only the
variable's name travels, and each process reads the value when it opens its connection
pool, so the variable must be set on every Dask worker.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import socket
from collections.abc import Mapping

from ._exceptions import ConfigurationError
from ._redact import register_secret

_SEALED = "sollol-dask-sealed-v1"
_FORBIDDEN = ("\r", "\n", "\0")  # a value holding these would split the HTTP header


@dataclasses.dataclass(frozen=True)
class FromEnv:
    """A header value read from environment variable ``var`` in each process that sends
    requests (every Dask worker), with ``prefix`` put in front.

    >>> Node("https://proxy", headers={"Authorization": FromEnv("API_TOKEN", prefix="Bearer ")})
    """

    var: str
    prefix: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.var, str) or not self.var or "=" in self.var:
            raise ConfigurationError(f"FromEnv needs an environment variable name, not {self.var!r}")
        if not isinstance(self.prefix, str) or any(c in self.prefix for c in _FORBIDDEN):
            raise ConfigurationError("FromEnv prefix must be text without line breaks")

    def resolve(self, header: str, node: str) -> str:
        value = os.environ.get(self.var)
        if not value:
            raise ConfigurationError(
                f"header {header!r} of {node}: environment variable {self.var} is not set "
                f"(or empty) on {socket.gethostname()} (process {os.getpid()}); set it on "
                "every machine that runs Dask workers")
        if any(c in value for c in _FORBIDDEN):
            raise ConfigurationError(f"header {header!r} of {node}: environment variable "
                                     f"{self.var} holds a line break")
        register_secret(value)
        register_secret(self.prefix + value)
        return self.prefix + value

    def __repr__(self) -> str:
        extra = f", prefix={self.prefix!r}" if self.prefix else ""
        return f"FromEnv({self.var!r}{extra})"


def check_headers(headers: object, node: str) -> dict[str, str | FromEnv] | None:
    """``headers`` as a plain dict, checked; values are registered for redaction.
    Errors name the header, never its value."""
    if headers is None:
        return None
    if not isinstance(headers, Mapping):
        raise ConfigurationError(f"node {node}: headers must be a dict of name -> value")
    checked: dict[str, str | FromEnv] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not name or any(c in name for c in ": \t\r\n\0"):
            raise ConfigurationError(f"node {node}: {name!r} is not a valid header name")
        if isinstance(value, str):
            if any(c in value for c in _FORBIDDEN):
                raise ConfigurationError(
                    f"node {node}: the value of header {name!r} holds a line break")
            register_secret(value)
        elif not isinstance(value, FromEnv):
            raise ConfigurationError(
                f"node {node}: header {name!r} must be text or sollol_dask.FromEnv, "
                f"not {type(value).__name__}")
        checked[name] = value
    return checked


def basic_auth(user: str, password: str | None) -> str:
    """The ``Authorization`` value for URL credentials (RFC 7617), registered as secret."""
    if password:
        register_secret(password)
    token = base64.b64encode(f"{user}:{password or ''}".encode()).decode("ascii")
    value = f"Basic {token}"
    register_secret(value)
    return value


def resolve_headers(headers: Mapping[str, str | FromEnv] | None, node: str) -> dict[str, str]:
    """The header values to send, read now (``FromEnv`` from this process's environment)."""
    return {name: value.resolve(name, node) if isinstance(value, FromEnv) else value
            for name, value in (headers or {}).items()}


# -- sealing ---------------------------------------------------------------------------
# Not encryption: the key is public. It keeps literal header values out of the bytes that
# distributed logs at DEBUG (a plugin registration, a task graph), where the process
# logging them (a `dask scheduler`) has no idea which values are secret.

def _keystream(size: int) -> bytes:
    return hashlib.shake_256(b"sollol-dask header seal").digest(size)


def seal_headers(headers: Mapping[str, str | FromEnv] | None) -> dict | None:
    if headers is None:
        return None
    return {name: _seal(value) if isinstance(value, str) else value
            for name, value in headers.items()}


def unseal_headers(headers: Mapping | None) -> dict[str, str | FromEnv] | None:
    if headers is None:
        return None
    out: dict[str, str | FromEnv] = {}
    for name, value in headers.items():
        if isinstance(value, tuple) and len(value) == 2 and value[0] == _SEALED:
            value = _xor(value[1]).decode("utf-8")
        if isinstance(value, str):
            register_secret(value)
        out[name] = value
    return out


def _seal(value: str) -> tuple[str, bytes]:
    return (_SEALED, _xor(value.encode("utf-8")))


def _xor(data: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(data, _keystream(len(data))))
