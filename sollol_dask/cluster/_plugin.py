"""The WorkerPlugin that gives every Dask worker process one cached router.

Only the picklable ``RouterSettings`` travel in the plugin; the router (connection pools, the
balancer, its event-loop thread) is built in ``setup`` on the worker and closed in
``teardown``. The plugin's name is a hash of its settings and it is idempotent, so
registering the same configuration twice (two notebooks, a rerun) keeps one pool, and
different configurations live side by side without tearing each other down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import uuid

from distributed import WorkerPlugin, get_worker
from tornado.ioloop import PeriodicCallback

from ..engine._router import Router
from .._settings import RouterSettings
from ._broker import BROKER_NAME, BrokerSlots, SlotBroker
from ._membership import MEMBERS_NAME, MembershipRegistry, read_members

logger = logging.getLogger(__name__)

REPORT_MS = 1000
# Event topics the scheduler's FleetMonitor (dashboard) listens to.
METRICS_TOPIC = "sollol-dask-metrics"  # per-node counters of a worker's router
JOBS_TOPIC = "sollol-dask-jobs"  # parquet runs: started, part written; parts of other jobs
_local_routers: dict[str, Router] = {}  # processes without a Dask worker (threaded scheduler)
_local_lock = threading.Lock()


def plugin_name(settings: RouterSettings) -> str:
    return f"sollol-dask-{settings.identity()}"


class RouterPlugin(WorkerPlugin):
    idempotent = True

    def __init__(self, settings: RouterSettings, *, cluster_slots: bool = True) -> None:
        self.settings = settings
        self.name = plugin_name(settings)
        self.cluster_slots = cluster_slots
        self.router: Router | None = None

    def setup(self, worker) -> None:
        # No I/O here: a node that is down must not break the plugin (the worker keeps a
        # plugin whose setup raised). The router probes the fleet on its first batch.
        slots = None
        if self.cluster_slots:
            call = _scheduler_call(worker)

            def slots(balancer):
                return BrokerSlots(balancer, call, worker.address)
        self.router = Router(self.settings, slots=slots, announce=False)
        _quiet_reported_failures()
        self._last_sent = None
        self._reporter = PeriodicCallback(lambda: self._report(worker), REPORT_MS)
        self._reporter.start()
        self._members = None
        if self.settings.fleet:  # a fleet nodes may join during a run: follow its list
            self._members = PeriodicCallback(lambda: self._follow_members(worker), REPORT_MS)
            self._members.start()
        logger.info("sollol-dask router %s ready on %s", self.name, worker.address)

    def _report(self, worker) -> None:
        """Send this worker's per-node counters to the scheduler's FleetMonitor: one
        aggregate event a second at most, none while nothing changes."""
        if self.router is None:
            return
        nodes = self.router.snapshot()
        key = [(n["requests"], n["inflight"], n["state"]) for n in nodes]
        if key == self._last_sent or not any(n["requests"] or n["state"] != "up" for n in nodes):
            return
        self._last_sent = key
        worker.log_event(METRICS_TOPIC, {"worker": worker.address, "config": self.name,
                                         "nodes": nodes})

    async def _follow_members(self, worker) -> None:
        """Let nodes that joined the fleet on the cluster join this worker's router."""
        router = self.router
        if router is None:
            return
        try:
            members = await read_members(worker, self.name)
        except Exception as err:  # the scheduler is busy or gone: the next round asks again
            logger.debug("could not read the fleet's members: %s", err)
            return
        new = [n for n in members if n.name not in router.fleet.nodes]
        if new:
            loop = asyncio.get_running_loop()
            joined = await loop.run_in_executor(None, router.add_nodes, new)
            if joined:
                logger.info("nodes joined the fleet on %s: %s", worker.address, ", ".join(joined))

    def teardown(self, worker) -> None:
        if getattr(self, "_members", None) is not None:
            self._members.stop()
        if getattr(self, "_reporter", None) is not None:
            self._reporter.stop()
            self._report(worker)
        if self.router is not None:
            self.router.close()
            self.router = None

    def __getstate__(self) -> dict:
        return {"settings": self.settings, "name": self.name, "cluster_slots": self.cluster_slots}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.router = None


def new_job(kind: str, label: str, parts: int, *, unit: str, token: str | None = None,
            total_rows: int | None = None) -> dict:
    """What each partition of a job without a start event (bag, dataframe, a distributed
    ``embed()``) tells the monitor, so that the first part to finish creates the job on
    the page. ``token``: the same for the same graph (computing it again restarts the
    job), else a new job every time."""
    return {"job": f"{kind}-{(token or uuid.uuid4().hex)[:12]}", "label": label,
            "parts": parts, "unit": unit, "total_rows": total_rows}


def report_part(job: dict | None, part, rows: int, seconds: float) -> None:
    """Tell the scheduler's monitor a partition of ``job`` is done (nothing off a worker)."""
    if job is None:
        return
    with contextlib.suppress(ValueError):  # not on a Dask worker: no monitor to tell
        get_worker().log_event(JOBS_TOPIC, {"kind": "part", "rows": rows, "part": part,
                                            "seconds": seconds, **job})


def task_partition() -> int | None:
    """The partition number of the running task, from its key (``(name, i)``)."""
    with contextlib.suppress(ValueError):
        key = get_worker().get_current_task()
        if isinstance(key, tuple) and len(key) > 1 and isinstance(key[-1], int):
            return key[-1]
    return None


class _DropReportedTaskFailures(logging.Filter):
    """distributed's worker logs every failed task as an ERROR with a traceback
    ("Compute Failed ..."), and each task cancelled by a closing worker (the run was
    stopped) as a WARNING. For this project's tasks the client reports the failure in one
    line naming the part and what to do, or says "interrupted": here they go to DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        if msg.startswith("Compute Failed") and record.args and \
                str(record.args[0]).startswith(OUR_TASKS):
            logger.debug("task %s failed (reported to the client): %s", record.args[0],
                         record.args[3] if len(record.args) > 3 else "")
            return False
        if msg.startswith("Async instruction for") and "ended with CancelledError" in msg \
                and any(f"execute('{prefix}" in msg for prefix in OUR_TASKS):
            logger.debug("%s", msg)
            return False
        return True


OUR_TASKS = ("sollol-embed-part-", "sollol-embed-chunk-")  # keys of tasks the client reports


def _quiet_reported_failures() -> None:
    for name in ("distributed.worker", "distributed.worker.state_machine"):
        worker_logger = logging.getLogger(name)
        if not any(isinstance(f, _DropReportedTaskFailures) for f in worker_logger.filters):
            worker_logger.addFilter(_DropReportedTaskFailures())


def _scheduler_call(worker):
    """``call(handler, **kw)`` for the router's loop: runs the RPC on the worker's loop
    (where its scheduler connection lives) and returns an awaitable for the caller's."""
    worker_loop = worker.loop.asyncio_loop

    def call(handler: str, **kwargs):
        async def run():
            return await getattr(worker.scheduler, handler)(**kwargs)

        return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(run(), worker_loop))

    return call


def register(client, settings: RouterSettings) -> str:
    """Install the slot broker and this configuration's worker plugin on the cluster
    (each a no-op if already there). The facade adds the dashboard's monitor."""
    client.register_plugin(SlotBroker(), name=BROKER_NAME)
    if settings.fleet:
        client.register_plugin(MembershipRegistry(), name=MEMBERS_NAME)
    name = plugin_name(settings)
    client.register_plugin(RouterPlugin(settings), name=name)
    return name


def router_for(settings: RouterSettings) -> Router:
    """The router of this process for ``settings``: the worker plugin's on a Dask worker,
    else a process-wide cached one (for dask's threaded or synchronous schedulers)."""
    try:
        worker = get_worker()
    except ValueError:
        worker = None
    name = plugin_name(settings)
    if worker is not None:
        plugin = worker.plugins.get(name)
        if plugin is not None and plugin.router is not None:
            return plugin.router
    with _local_lock:
        router = _local_routers.get(name)
        if router is None:
            router = _local_routers[name] = Router(settings)
        return router


def existing_router(settings: RouterSettings, worker=None) -> Router | None:
    """This process's router for ``settings`` if one was built (never builds one).
    ``worker``: pass it from ``client.run`` (``dask_worker``), where get_worker() fails."""
    name = plugin_name(settings)
    if worker is None:
        try:
            worker = get_worker()
        except ValueError:
            worker = None
    plugin = worker.plugins.get(name) if worker is not None else None
    if plugin is not None and plugin.router is not None:
        return plugin.router
    return _local_routers.get(name)
