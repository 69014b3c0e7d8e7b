"""``Embedder``: the one object a user creates. Settings on the client, routers wherever
the work runs (this process for ``embed``, each Dask worker for the collections)."""

from __future__ import annotations

import logging
import threading
import warnings
import weakref
from collections.abc import Iterable, Sequence

import numpy as np
from distributed.client import FutureCancelledError, FuturesCancelledError
from distributed.comm import CommClosedError

from .cluster import _collections, _ownership, _parquet, _plan, _plugin
from .cluster._clients import current_client
from ._exceptions import SollolError
from .policy._identity import Reference
from ._config import resolve_settings
from ._node import Node
from ._report import EmbedReport
from .engine._router import Router
from ._exceptions import InsecureTLSWarning
from ._settings import RouterSettings
from .dashboard import MONITOR_NAME, FleetMonitor, FleetStatus

logger = logging.getLogger(__name__)

# Above this many texts, with a Dask client active, embed() spreads the list over the
# cluster; below it the in-process router is faster (no task round trips).
DISTRIBUTE_ABOVE = 20_000
CHUNK = 4096


class Embedder:
    """Embed texts across a fleet of Ollama or OpenAI-compatible nodes.

    >>> emb = Embedder(["http://gpu1:11434", "http://cpu1:11434"], model="nomic-embed-text")
    >>> vecs = emb.embed(["a question", "a passage"])   # float32 (2, dim), input order

    ``nodes``: URL strings (Ollama) and/or :class:`Node` objects; ``None`` reads
    ``SOLLOL_NODES`` (comma-separated), then ``OLLAMA_HOST``, then http://127.0.0.1:11434.

    Every other setting left as ``None`` comes from Dask's config under ``sollol-dask``
    (``dask.config.set({"sollol-dask.batch-size": 64})``, a YAML file, or
    ``DASK_SOLLOL_DASK__BATCH_SIZE=64``), whose defaults ship in ``sollol-dask.yaml``:
    ``batch_size`` (512 texts per request at most), ``batch_seconds`` (1.0: a measured
    node gets about this much work per request), ``max_batch_chars`` (256,000),
    ``max_attempts`` (6), ``first_timeout`` (120 s), ``min_timeout`` (5 s),
    ``timeout_factor`` (10x a node's expected batch time), ``probe_timeout`` (10 s),
    ``wait_for_nodes`` (60 s with every node down before failing), ``eject_after`` (3),
    ``quarantine_after`` (3 bad answers in a row quarantine a node),
    ``max_response_bytes`` (None: texts x dimension x 48 bytes + 1 MiB per answer),
    ``verify`` (TLS: True, False or a CA bundle path); per request: ``truncate`` (True:
    the server truncates texts longer than the context; False: such a text raises
    ``InputError`` naming its row), ``keep_alive``, ``dimensions``, ``options`` (Ollama
    model options, sent identically every time), ``encoding`` ("base64" or "float",
    OpenAI route).

    Close it when done (``with Embedder(...) as emb:`` or ``emb.close()``): that stops its
    event-loop thread and connection pools. One that is dropped unclosed is closed when
    it is garbage-collected.
    """

    def __init__(self, nodes: Iterable[str | Node] | str | Node | None = None, *,
                 model: str,
                 batch_size: int | None = None,
                 batch_seconds: float | None = None,
                 max_batch_chars: int | None = None,
                 max_attempts: int | None = None,
                 first_timeout: float | None = None,
                 min_timeout: float | None = None,
                 timeout_factor: float | None = None,
                 probe_timeout: float | None = None,
                 wait_for_nodes: float | None = None,
                 eject_after: int | None = None,
                 quarantine_after: int | None = None,
                 max_response_bytes: int | None = None,
                 verify: bool | str | None = None,
                 truncate: bool | None = None,
                 keep_alive: str | None = None,
                 dimensions: int | None = None,
                 options: dict | None = None,
                 encoding: str | None = None) -> None:
        given = {k: v for k, v in locals().items() if k not in ("self", "nodes", "model")}
        self._start(resolve_settings(nodes, model, given))
        _warn_if_unverified(self.settings)

    @classmethod
    def from_settings(cls, settings: RouterSettings) -> Embedder:
        self = cls.__new__(cls)
        self._start(settings)
        return self

    def _start(self, settings: RouterSettings) -> None:
        self.settings = settings
        self._holder = _RouterHolder(settings)
        # Closes the router (thread, pools, supervisor) when this Embedder is collected;
        # the holder, not the Embedder, is referenced, so the Embedder can be collected.
        self._finalizer = weakref.finalize(self, self._holder.close)

    @property
    def model(self) -> str:
        return self.settings.opts.model

    @property
    def nodes(self) -> tuple[Node, ...]:
        return self.settings.nodes

    @property
    def router(self) -> Router:
        """This process's router (built on first use)."""
        return self._holder.get()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors for ``texts``: float32 ``(len(texts), dim)``, rows in input order.

        Batched, spread over every node with a free slot, identical texts sent once,
        failed batches retried on other nodes; every vector is checked.
        """
        if isinstance(texts, str):
            raise TypeError("embed() takes a list of texts; wrap a single text as [text]")
        self._holder.check_open()
        texts = list(texts)
        client = current_client() if len(texts) > DISTRIBUTE_ABOVE else None
        if client is None:
            return self.router.embed(texts)
        self.register(client)
        chunks = [texts[i:i + CHUNK] for i in range(0, len(texts), CHUNK)]
        futures = client.map(_collections.embed_chunk, [self.settings] * len(chunks), chunks,
                             range(0, len(texts), CHUNK), pure=False)
        return np.concatenate(client.gather(futures))

    # -- Dask ------------------------------------------------------------------------

    def register(self, client=None) -> str:
        """Install this configuration's WorkerPlugin (one router per worker) on the
        cluster of ``client`` (default: the current client); a repeat is a no-op."""
        self._holder.check_open()
        client = client or current_client()
        if client is None:
            raise ValueError("no Dask client: pass client= or create a distributed.Client")
        client.register_plugin(FleetMonitor(), name=MONITOR_NAME)  # the /sollol page's data
        return _plugin.register(client, self.settings)

    def _dimension(self) -> int:
        return self.check_fleet().dimension

    def embed_dataframe(self, ddf, column: str = "text", *, output_column: str = "embedding",
                        on_invalid: str = "raise"):
        """Lazily add ``output_column`` (``fixed_size_list<float32>[dim]``) to a dask
        dataframe. Null, NaN, empty or whitespace texts get a null vector. Building the
        graph sends one probe (to learn the dimension) and no embedding request."""
        self._register_if_client()
        return _collections.embed_dataframe(self.settings, ddf, column, self._dimension(),
                                            output_column=output_column, on_invalid=on_invalid)

    def embed_bag(self, bag, *, on_invalid: str = "raise"):
        """Lazily map a dask bag of texts to float32 vectors (None for missing texts),
        keeping its partitioning and order."""
        self._register_if_client()
        return _collections.embed_bag(self.settings, bag, self._dimension(), on_invalid=on_invalid)

    def embed_parquet(self, src: str, dst: str, column: str = "text", *, client=None,
                      output_column: str = "embedding", overwrite: bool = False,
                      rows_per_part: int = 4096, progress: bool = False,
                      on_invalid: str = "record", retry_errors: bool = False) -> EmbedReport:
        """Embed a parquet corpus (file, directory or glob) into ``dst`` part files.

        Every input column is kept and ``output_column`` added. Resumable: parts that
        verify (size, sha256, footer, rows, model) are skipped, others recomputed; a run
        with another model or settings, or changed inputs, is refused unless
        ``overwrite=True``, which deletes only the files ``dst``'s manifest lists. The run
        holds a lock in ``dst``; ``dst`` must not overlap ``src``. Uses ``client`` (or a
        scheduler address), else the current client, else a LocalCluster started for the run.

        ``on_invalid="record"`` (the default): a row that cannot be embedded for a reason of
        its own (not text, invalid Unicode, too long with ``truncate=False``, answered
        wrongly for that row alone) gets a null vector and is listed with its reason in
        ``dst/_errors/<part>`` and counted in the report; ``"raise"`` fails on the first
        non-text value, ``"null"`` nulls non-text values without a list.
        ``retry_errors=True`` embeds again the rows listed there (and nothing else
        already written), for instance once the servers are fixed.
        """
        _plan.list_inputs(src)  # a wrong path is reported before any node is probed
        _ownership.check_disjoint(src, dst)  # so is an output that overlaps the inputs
        try:
            return _parquet.run_embed_parquet(
                self.settings, self.check_fleet(), src, dst, column=column,
                output_column=output_column, client=client, overwrite=overwrite,
                rows_per_part=rows_per_part, progress=progress, on_invalid=on_invalid,
                retry_errors=retry_errors, install=self.register)
        except (FutureCancelledError, FuturesCancelledError, CommClosedError) as exc:
            if not _scheduler_lost(exc):
                raise
            where = f" at {client}" if isinstance(client, str) else ""
            raise SollolError(
                f"lost the connection to the Dask scheduler{where} while embedding into "
                f"{dst}: finished parts are kept; rerun the same command (or call) to "
                "resume") from exc

    def _register_if_client(self) -> None:
        client = current_client()
        if client is not None:
            self.register(client)

    def check_fleet(self) -> Reference:
        """Probe the nodes now; returns the dimension and digest this run will use."""
        return self.router.check_fleet()

    def status(self, client=None):
        """The fleet table: the cluster's (from its scheduler) when a Dask client is
        given or current, else this process's. Renders as HTML in Jupyter."""
        client = client or current_client()
        if client is not None:
            return FleetStatus.from_scheduler(client)
        return FleetStatus.from_router(self.router)

    def node_stats(self) -> list[dict]:
        """Per-node counters of this process's router (requests, texts, errors, state)."""
        router = self._holder.router
        return router.snapshot() if router is not None else []

    def close(self) -> None:
        """Stop this process's router: its thread, connection pools and probes. The
        Embedder cannot be used afterwards (lazy collections it made still can)."""
        self._finalizer()

    def __enter__(self) -> Embedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict:
        return {"settings": self.settings}

    def __setstate__(self, state: dict) -> None:
        self._start(state["settings"])

    def __repr__(self) -> str:
        nodes = ", ".join(repr(n) for n in self.settings.nodes)
        return f"Embedder(model={self.model!r}, nodes=[{nodes}])"


class _RouterHolder:
    """An Embedder's router, kept apart from the Embedder so a finalizer can close it
    without keeping the Embedder alive."""

    def __init__(self, settings: RouterSettings) -> None:
        self.settings = settings
        self.router: Router | None = None
        self.closed = False
        self._lock = threading.Lock()

    def check_open(self) -> None:
        if self.closed:
            raise SollolError("this Embedder is closed; create a new one")

    def get(self) -> Router:
        with self._lock:
            self.check_open()
            if self.router is None:
                self.router = Router(self.settings)
            return self.router

    def close(self) -> None:
        with self._lock:
            self.closed = True
            router, self.router = self.router, None
        if router is not None:
            router.close()


def _warn_if_unverified(settings: RouterSettings) -> None:
    if settings.verify is not False:
        return
    names = [n.name for n in settings.nodes if n.url.startswith("https://")]
    if not names:
        return
    logger.warning("TLS certificate verification is off (verify=False) for %s", ", ".join(names))
    warnings.warn(
        f"TLS certificate verification is off for {', '.join(names)}: anyone on the path "
        "can read the requests and their headers. Pass verify='/path/ca.pem' to trust a "
        "private CA", InsecureTLSWarning, stacklevel=3)


def _scheduler_lost(exc: BaseException) -> bool:
    """Whether distributed failed the run because the client lost its scheduler."""
    if isinstance(exc, CommClosedError):
        return True
    reasons = {getattr(exc, "reason", None)}
    reasons.update(getattr(group, "reason", None) for group in getattr(exc, "error_groups", ()))
    return "scheduler-connection-lost" in reasons
