"""Everything a router needs, as one frozen, picklable value.

The Embedder builds it on the client; the WorkerPlugin ships it to every worker (workers
never see ``dask.config.set`` calls made after they started, so nothing is read there).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import ssl

import orjson

from ._exceptions import ConfigurationError
from ._node import Node
from .backends import EmbedOptions


LENGTH_POLICIES = ("truncate", "reject", "chunk")


@dataclasses.dataclass(frozen=True)
class RouterSettings:
    nodes: tuple[Node, ...]
    opts: EmbedOptions
    # Texts per request at most. Measured nodes get about ``batch_seconds`` of work per
    # request: ~100 texts on a GPU-class Ollama node, ~10 on a CPU one; only nodes
    # faster than this many texts a second reach the maximum, where large requests keep
    # the client's per-request cost small (benchmarks/README.md, scenario 5).
    batch_size: int = 512
    batch_seconds: float = 1.0  # a short tail, yet per-request overhead stays ~1-2%
    max_batch_chars: int = 256_000  # characters per request (~64k tokens; TEI takes 2 MB)
    max_attempts: int = 6  # tries per batch before the run fails
    first_timeout: float = 120.0  # first request to a node: may include a cold model load
    min_timeout: float = 5.0  # a measured node never gets less than this
    timeout_factor: float = 10.0  # x the node's expected batch latency
    probe_timeout: float = 10.0  # fleet check and re-probes of ejected nodes
    wait_for_nodes: float = 60.0  # how long a run waits with every node down before failing
    eject_after: int = 3  # transient failures in a row that eject a node
    # Bad answers in a row (vectors failing a check, bodies too large, dripping or not
    # JSON) after which a node is quarantined: probes do not clear them, a good batch does.
    quarantine_after: int = 3
    # Largest embedding answer read; None: derived per request (texts x dimension x 48
    # bytes + 1 MiB, room for pretty-printed JSON floats). Probes are capped at 4 MiB.
    max_response_bytes: int | None = None
    verify: bool | str = True  # TLS verification for https:// nodes; or a CA bundle path
    # Names a fleet whose members change during a run (discovery): the configuration's
    # identity on a cluster (``identity``) hashes this instead of the node list, so nodes
    # that join keep the workers' routers, measured speeds and cluster-wide caps.
    # "": the node list names the fleet (an explicit list).
    fleet: str = ""
    # What happens to a text longer than the model's context: "truncate" (the server cuts
    # it), "reject" (a row error), "chunk" (embedded as overlapping windows, pooled; see
    # engine/_chunking). None: as ``opts.truncate`` says (truncate or reject).
    length_policy: str | None = None
    # Tokens of context the chunk policy plans windows for; None: the nodes' own (probed).
    context_length: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "verify", check_verify(self.verify))
        policy = self.length_policy or ("truncate" if self.opts.truncate else "reject")
        if policy not in LENGTH_POLICIES:
            raise ConfigurationError(
                f"length_policy must be one of {', '.join(LENGTH_POLICIES)}, not {policy!r}")
        object.__setattr__(self, "length_policy", policy)
        if self.opts.truncate != (policy == "truncate"):
            # Windows go with truncation off: a window still too long is refused and
            # split again rather than silently cut.
            object.__setattr__(self, "opts",
                               dataclasses.replace(self.opts, truncate=policy == "truncate"))
        if self.context_length is not None and (
                not isinstance(self.context_length, int) or self.context_length < 8):
            raise ConfigurationError(
                f"context_length must be a number of tokens >= 8, not {self.context_length!r}")
        if not self.opts.model or not isinstance(self.opts.model, str):
            raise ConfigurationError("model must be a non-empty string such as 'nomic-embed-text'")
        for name in ("batch_size", "max_batch_chars", "max_attempts", "eject_after",
                     "quarantine_after"):
            if getattr(self, name) < 1:
                raise ConfigurationError(f"{name} must be >= 1, not {getattr(self, name)}")
        if self.max_response_bytes is not None and self.max_response_bytes < 1024:
            raise ConfigurationError("max_response_bytes must be None (derived) or >= 1024")
        for name in ("first_timeout", "min_timeout", "probe_timeout", "wait_for_nodes",
                     "batch_seconds"):
            if not getattr(self, name) > 0:
                raise ConfigurationError(f"{name} must be > 0 seconds")
        check_prefix(self.opts.prefix)

    def fingerprint(self) -> str:
        """A short stable hash of the whole configuration (headers included, hashed)."""
        data = dataclasses.asdict(self)
        blob = orjson.dumps(data, option=orjson.OPT_SORT_KEYS, default=str)
        return hashlib.sha256(blob).hexdigest()[:12]

    def identity(self) -> str:
        """The configuration's name on a cluster: ``fingerprint`` without the node list
        when ``fleet`` names the fleet, so it stays the same as nodes join."""
        if not self.fleet:
            return self.fingerprint()
        return dataclasses.replace(self, nodes=()).fingerprint()


def check_prefix(prefix: object) -> str:
    """``prefix`` if it is text: what is put before every text."""
    if not isinstance(prefix, str):
        raise ConfigurationError(
            f"prefix must be text such as 'search_document: ', not {type(prefix).__name__}")
    return prefix


def check_verify(verify: object) -> bool | str:
    """``verify`` as True, False or the path of a readable PEM CA bundle.

    Checked here, on the client, so a wrong path is named at once instead of every
    https:// node looking down. (Workers read the file again when they connect.)
    """
    if isinstance(verify, bool):
        return verify
    if not isinstance(verify, (str, os.PathLike)):
        raise ConfigurationError(
            f"verify must be True, False or the path of a CA bundle, not {type(verify).__name__}")
    path = os.fspath(verify)
    try:
        ssl.create_default_context(cafile=path)
    except FileNotFoundError:
        raise ConfigurationError(f"verify={path!r}: no such CA bundle file") from None
    except (OSError, ssl.SSLError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
        raise ConfigurationError(
            f"verify={path!r}: cannot use it as a CA bundle ({reason}); give a PEM file "
            "of CA certificates") from None
    return path
