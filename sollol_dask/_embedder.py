"""``Embedder``: the one object a user creates. Settings on the client, routers wherever
the work runs (this process for ``embed``, each Dask worker for the collections)."""

from __future__ import annotations

import dataclasses
import logging
import threading
import uuid
import warnings
import weakref
from collections.abc import Iterable, Sequence

import numpy as np
from distributed.client import FutureCancelledError, FuturesCancelledError
from distributed.comm import CommClosedError

from .cluster import (_chunked, _collections, _discover, _membership, _ownership, _parquet,
                      _plan, _plugin, _progress)
from .cluster._clients import current_client
from ._exceptions import ConfigurationError, SollolError
from .discovery import DiscoverySpec
from .policy._identity import Reference
from ._config import resolve_settings
from ._node import Node
from ._progress import RowProgress
from ._report import EmbedReport
from .engine._router import Router
from ._exceptions import InsecureTLSWarning
from ._settings import RouterSettings, check_prefix
from .cluster._batches import BatchEmbedder
from .engine._chunking import chunk_table
from .dashboard import MONITOR_NAME, FleetMonitor, FleetStatus

logger = logging.getLogger(__name__)

# Above this many texts, with a Dask client active, embed() spreads the list over the
# cluster; below it the in-process router is faster (no task round trips).
DISTRIBUTE_ABOVE = 20_000
DEFAULT_REDISCOVER = 30.0  # seconds between discovery rounds of nodes="auto"
CHUNK = 4096


class Embedder:
    """Embed texts across a fleet of Ollama or OpenAI-compatible nodes.

    >>> emb = Embedder(["http://gpu1:11434", "http://cpu1:11434"], model="nomic-embed-text")
    >>> vecs = emb.embed(["a question", "a passage"])   # float32 (2, dim), input order

    ``nodes``: URL strings and/or :class:`Node` objects; ``None`` reads ``SOLLOL_NODES``
    (URLs separated by commas and/or spaces), then ``OLLAMA_HOST``, then
    http://127.0.0.1:11434. A URL string is an Ollama node, unless written
    ``openai+http://box:8080`` or as its ``/v1`` base URL (``http://box:8080/v1``): then
    it is an OpenAI-compatible one (llama.cpp, vLLM, TEI, Infinity), as
    ``Node(url, api="openai")``. ``"auto"`` (or a ``DiscoverySpec``) finds them
    (``discovery=`` says where: see ``sollol_dask.discover``) and looks again every
    ``rediscover`` seconds (30; 0: never) while it runs, so nodes switched on later join.

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
    ``InputError`` naming its row), ``length_policy`` ("truncate", "reject" (the same as
    truncate=False) or "chunk": a long text is embedded as overlapping windows that fit
    the context and their vectors averaged; see README "Long texts"), ``context_length``
    (tokens the chunk policy plans for; None: what the nodes report), ``keep_alive``, ``dimensions``, ``options`` (Ollama
    model options, sent identically every time), ``encoding`` ("base64" or "float",
    OpenAI route), ``prefix`` ("": put before every text, e.g. "search_document: " for
    nomic-embed-text; every ``embed*`` call takes ``prefix=`` to override it for that call).

    Close it when done (``with Embedder(...) as emb:`` or ``emb.close()``): that stops its
    event-loop thread and connection pools. One that is dropped unclosed is closed when
    it is garbage-collected.
    """

    def __init__(self, nodes: Iterable[str | Node] | str | Node | DiscoverySpec | None = None, *,
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
                 length_policy: str | None = None,
                 context_length: int | None = None,
                 keep_alive: str | None = None,
                 dimensions: int | None = None,
                 options: dict | None = None,
                 encoding: str | None = None,
                 prefix: str | None = None,
                 discovery: DiscoverySpec | None = None,
                 rediscover: float | None = None) -> None:
        given = {k: v for k, v in locals().items()
                 if k not in ("self", "nodes", "model", "discovery", "rediscover")}
        found = None
        if nodes == "auto" or isinstance(nodes, DiscoverySpec):
            spec = nodes if isinstance(nodes, DiscoverySpec) else discovery or DiscoverySpec()
            nodes, found = _discover.discover_fleet(model, spec, dimensions)
        if found is None and (rediscover or discovery is not None):
            raise ConfigurationError(
                f"{'rediscover' if rediscover else 'discovery'}= needs nodes='auto' (or a "
                "DiscoverySpec as nodes)")
        settings = resolve_settings(nodes, model, given)
        if found is not None:
            settings = dataclasses.replace(settings, fleet=f"discovered:{found.spec!r}")
        self._start(settings)
        if found is not None:
            self._start_rediscovery(found, DEFAULT_REDISCOVER if rediscover is None
                                    else rediscover)
        _warn_if_unverified(self.settings)

    def _start_rediscovery(self, search: _discover.FleetSearch, every: float) -> None:
        holder = self._holder
        self._fleet = _discover.DiscoveredFleet(search.spec, self.model, self.settings.nodes,
                                                lambda: holder.router, search.dimensions)
        if every > 0:
            rounds = _membership.Rediscovery(self._fleet.find, self._fleet.found, every)
            # close() (or collection) stops the rounds too, before the router closes.
            self._finalizer.detach()
            self._finalizer = weakref.finalize(self, _stop_and_close, rounds, holder)

    @classmethod
    def from_settings(cls, settings: RouterSettings) -> Embedder:
        self = cls.__new__(cls)
        self._start(settings)
        return self

    def _start(self, settings: RouterSettings) -> None:
        self.settings = settings
        self._fleet = None  # a DiscoveredFleet when nodes="auto"
        self._holder = _RouterHolder(settings)
        # Closes the router (thread, pools, supervisor) when this Embedder is collected;
        # the holder, not the Embedder, is referenced, so the Embedder can be collected.
        self._finalizer = weakref.finalize(self, self._holder.close)

    @property
    def model(self) -> str:
        return self.settings.opts.model

    @property
    def nodes(self) -> tuple[Node, ...]:
        """The fleet's nodes: with nodes="auto", those found so far."""
        return tuple(self._fleet.nodes) if self._fleet is not None else self.settings.nodes

    @property
    def router(self) -> Router:
        """This process's router (built on first use)."""
        return self._holder.get()

    def embed(self, texts: Sequence[str] | str, *, prefix: str | None = None,
              progress: bool = False) -> np.ndarray:
        """Vectors for ``texts``: float32 ``(len(texts), dim)``, rows in input order; for
        one text (a ``str``), its vector, shape ``(dim,)``.

        Batched, spread over every node with a free slot, identical texts sent once,
        failed batches retried on other nodes; every vector is checked. ``prefix``
        overrides the Embedder's for this call. ``progress``: show rows done, rate and
        ETA (a Jupyter widget, or a bar on stderr).
        """
        if isinstance(texts, str):
            return self.embed([texts], prefix=prefix)[0]
        self._holder.check_open()
        texts = _prefixed(texts, self._prefix(prefix))
        client = current_client() if len(texts) > DISTRIBUTE_ABOVE else None
        if client is None:
            if not progress:
                return self.router.embed(texts)
            with RowProgress(len(texts)) as shown:
                return self.router.embed(texts, on_rows=shown.advance, tick=shown.refresh)
        self.register(client)
        chunks = [texts[i:i + CHUNK] for i in range(0, len(texts), CHUNK)]
        token = uuid.uuid4().hex[:8]
        topic = _progress.rows_topic(token) if progress else None
        job = _collections.embed_job(len(texts), len(chunks))  # listed on the /sollol page
        futures = client.map(_collections.embed_chunk, [self.settings] * len(chunks), chunks,
                             range(0, len(texts), CHUNK), job=job, progress_topic=topic,
                             key=[f"sollol-embed-chunk-{token}-{i}" for i in range(len(chunks))],
                             pure=False)
        _progress.wait_for(client, futures, range(0, len(texts), CHUNK),
                           [len(c) for c in chunks], topic=topic, total=len(texts))
        return np.concatenate(client.gather(futures))

    def embed_chunks(self, texts, column: str = "text", *, prefix: str | None = None):
        """Every text as the windows the ``chunk`` length policy embeds, one row each:
        ``row`` (the text's position; in a dask DataFrame its index label), ``chunk`` (0,
        1, ... in the text), ``start`` and ``end`` (character offsets in the text as
        given) and ``embedding``. A text that fits is one window; the prefix (the
        Embedder's) goes before every window. Needs ``length_policy="chunk"``.

        ``texts``: a list (embedded now, in this process: a ``pyarrow.Table``; a text that
        cannot be embedded raises ``InputError`` naming its row), or a dask DataFrame and
        its ``column`` (lazily, over the cluster: a dask DataFrame; missing texts give no
        rows; write it with ``.to_parquet(...)``).

        >>> table = emb.embed_chunks([long_report])   # emb made with length_policy="chunk"
        """
        self._holder.check_open()
        _chunked.check_chunk_policy(self.settings)
        if hasattr(texts, "map_partitions"):
            _collections.check_dataframe(texts)
            self._register_if_client()
            return _chunked.chunk_dataframe(self.settings, texts, column, self._dimension(),
                                            prefix=self._prefix(prefix))
        return chunk_table(self.router.embed_chunks(_prefixed(texts, self._prefix(prefix))))

    async def aembed(self, texts: Sequence[str] | str, *,
                     prefix: str | None = None) -> np.ndarray:
        """``embed`` to await from a running event loop (Jupyter's, a web server's): the
        requests run on this Embedder's own loop thread, so the caller's loop keeps
        serving while it waits. In-process only (never spread over a Dask cluster).

        >>> vecs = await emb.aembed(["a question", "a passage"])
        """
        if isinstance(texts, str):
            return (await self.aembed([texts], prefix=prefix))[0]
        self._holder.check_open()
        return await self.router.embed_async(_prefixed(texts, self._prefix(prefix)))

    def _prefix(self, prefix: str | None) -> str:
        return self.settings.opts.prefix if prefix is None else check_prefix(prefix)

    # -- Dask ------------------------------------------------------------------------

    def register(self, client=None) -> str:
        """Install this configuration's WorkerPlugin (one router per worker) on the
        cluster of ``client`` (default: the current client); a repeat is a no-op."""
        self._holder.check_open()
        client = client or current_client()
        if client is None:
            raise ValueError("no Dask client: pass client= or create a distributed.Client")
        client.register_plugin(FleetMonitor(), name=MONITOR_NAME)  # the /sollol page's data
        name = _plugin.register(client, self.settings)
        if self._fleet is not None:
            self._fleet.attach(client, name)
        return name

    def _dimension(self) -> int:
        return self.check_fleet().dimension

    def embed_dataframe(self, ddf, column: str = "text", *, output_column: str = "embedding",
                        on_invalid: str = "raise", prefix: str | None = None):
        """Lazily add ``output_column`` (``fixed_size_list<float32>[dim]``) to a dask
        dataframe. Null, NaN, empty or whitespace texts get a null vector. Building the
        graph sends one probe (to learn the dimension) and no embedding request."""
        _collections.check_dataframe(ddf)
        self._register_if_client()
        return _collections.embed_dataframe(self.settings, ddf, column, self._dimension(),
                                            output_column=output_column, on_invalid=on_invalid,
                                            prefix=self._prefix(prefix))

    def embed_bag(self, bag, *, on_invalid: str = "raise", prefix: str | None = None):
        """Lazily map a dask bag of texts to float32 vectors (None for missing texts),
        keeping its partitioning and order."""
        _collections.check_bag(bag)
        self._register_if_client()
        return _collections.embed_bag(self.settings, bag, self._dimension(), on_invalid=on_invalid,
                                      prefix=self._prefix(prefix))

    def batch_function(self, column: str = "text", output_column: str = "embedding", *,
                       on_invalid: str = "raise", prefix: str | None = None) -> BatchEmbedder:
        """A picklable ``fn(batch)`` for frameworks that map batches themselves: takes a
        pandas DataFrame or a pyarrow Table and returns the same type with
        ``output_column`` added (``fixed_size_list<float32>[dim]``, null for missing
        texts). On a Dask worker it uses the worker's router; elsewhere (a Ray worker)
        one router per process.

        >>> ddf.map_partitions(emb.batch_function(column="text"))     # Dask
        >>> ds.map_batches(emb.batch_function(), batch_format="pandas")  # Ray Data
        """
        self._register_if_client()
        return BatchEmbedder(self.settings, column, output_column, self._dimension(),
                             on_invalid=on_invalid, prefix=self._prefix(prefix))

    def embed_parquet(self, src: str, dst: str, column: str = "text", *, client=None,
                      output_column: str = "embedding", overwrite: bool = False,
                      rows_per_part: int = 4096, progress: bool = False,
                      on_invalid: str = "record", prefix: str | None = None,
                      retry_errors: bool = False,
                      truncated_column: str | None = None,
                      n_tokens_column: str | None = None) -> EmbedReport:
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
        ``truncated_column`` (truncate length policy): add a bool column of that name, True
        for the rows the server cut (see README "Long texts" for how it is learnt and
        what it costs). ``n_tokens_column``: add an int64 column of each row's tokens as
        sent, counted by a node's own tokenizer (llama.cpp ``/tokenize``, one request per
        row); null where no node offers one, and for rows without a vector.
        """
        _plan.list_inputs(src)  # a wrong path is reported before any node is probed
        _ownership.check_disjoint(src, dst)  # so is an output that overlaps the inputs
        try:
            return _parquet.run_embed_parquet(
                self.settings, self.check_fleet(), src, dst, column=column,
                output_column=output_column, client=client, overwrite=overwrite,
                rows_per_part=rows_per_part, progress=progress, on_invalid=on_invalid,
                prefix=self._prefix(prefix), retry_errors=retry_errors,
                truncated_column=truncated_column, n_tokens_column=n_tokens_column,
                install=self.register)
        except (FutureCancelledError, FuturesCancelledError, CommClosedError) as exc:
            if not _scheduler_lost(exc):
                raise
            address = client if isinstance(client, str) else \
                getattr(getattr(client, "scheduler", None), "address", None)
            where = f" at {address}" if isinstance(address, str) else ""
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


def _prefixed(texts: Iterable[str], prefix: str) -> list[str]:
    if not prefix:
        return list(texts)
    return [prefix + t if isinstance(t, str) else t for t in texts]


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


def _stop_and_close(rounds: _membership.Rediscovery, holder: _RouterHolder) -> None:
    rounds.stop()
    holder.close()


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
