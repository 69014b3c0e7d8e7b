"""Everything a router needs, as one frozen, picklable value.

The Embedder builds it on the client; the WorkerPlugin ships it to every worker (workers
never see ``dask.config.set`` calls made after they started, so nothing is read there).
"""

from __future__ import annotations

import dataclasses
import hashlib

import orjson

from ._exceptions import ConfigurationError
from ._node import Node
from .backends import EmbedOptions


@dataclasses.dataclass(frozen=True)
class RouterSettings:
    nodes: tuple[Node, ...]
    opts: EmbedOptions
    batch_size: int = 64  # texts per request at most
    batch_seconds: float = 2.0  # once a node is measured, its batches aim at this latency
    max_batch_chars: int = 64_000  # characters per request (keeps bodies and tails small)
    max_attempts: int = 6  # tries per batch before the run fails
    first_timeout: float = 120.0  # first request to a node: may include a cold model load
    min_timeout: float = 5.0  # a measured node never gets less than this
    timeout_factor: float = 10.0  # x the node's expected batch latency
    probe_timeout: float = 10.0  # fleet check and re-probes of ejected nodes
    wait_for_nodes: float = 60.0  # how long a run waits with every node down before failing
    eject_after: int = 3  # transient failures in a row that eject a node
    verify: bool | str = True  # TLS verification for https:// nodes; or a CA bundle path

    def __post_init__(self) -> None:
        if not self.opts.model or not isinstance(self.opts.model, str):
            raise ConfigurationError("model must be a non-empty string such as 'nomic-embed-text'")
        for name in ("batch_size", "max_batch_chars", "max_attempts", "eject_after"):
            if getattr(self, name) < 1:
                raise ConfigurationError(f"{name} must be >= 1, not {getattr(self, name)}")
        for name in ("first_timeout", "min_timeout", "probe_timeout", "wait_for_nodes",
                     "batch_seconds"):
            if not getattr(self, name) > 0:
                raise ConfigurationError(f"{name} must be > 0 seconds")

    def fingerprint(self) -> str:
        """A short stable hash of the whole configuration (headers included, hashed)."""
        data = dataclasses.asdict(self)
        blob = orjson.dumps(data, option=orjson.OPT_SORT_KEYS, default=str)
        return hashlib.sha256(blob).hexdigest()[:12]
