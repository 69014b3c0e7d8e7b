"""``FleetMonitor``: the scheduler's side of observability.

Worker routers send a snapshot about once a second (``worker.log_event`` on topic
``sollol-dask-metrics``; jobs on ``sollol-dask-jobs``); the monitor merges them into a
``FleetView``, serves it to the page, `/metrics` and `sollol-dask status`, and mounts the
``/sollol`` page on the running dashboard if a preload module has not already. It samples
the fleet's throughput every second, so a page opened late still shows the last minutes.
"""

from __future__ import annotations

import logging

from distributed.diagnostics.plugin import SchedulerPlugin
from tornado.ioloop import PeriodicCallback

from ..cluster._broker import BROKER_NAME
from ..cluster._plugin import JOBS_TOPIC, METRICS_TOPIC
from ._names import MONITOR_NAME, PAGE
from ._prometheus import register_collector
from ._view import FleetView

SAMPLE_MS = 1000
PART_FIELDS = ("part", "label", "parts", "unit", "seconds", "total_rows", "row_errors")  # of lazy jobs

logger = logging.getLogger(__name__)


class FleetMonitor(SchedulerPlugin):
    name = MONITOR_NAME
    idempotent = True

    async def start(self, scheduler) -> None:
        self.scheduler = scheduler
        self.view = FleetView()
        self._sampler = PeriodicCallback(self.view.tick, SAMPLE_MS)
        self._sampler.start()
        register_collector(self)
        try:
            from ._page import mount_page  # bokeh: optional on a scheduler

            mount_page(scheduler)
        except Exception:  # the dashboard is optional (no bokeh, or disabled)
            logger.warning("could not mount the %s dashboard page", PAGE, exc_info=True)

    def log_event(self, topic: str, msg) -> None:
        if topic == METRICS_TOPIC:
            self.view.update(msg["worker"], msg["config"], msg["nodes"])
        elif topic == JOBS_TOPIC:
            if msg.get("kind") == "start":
                self.view.job_started(msg["job"], msg["output"], msg["rows"], msg["parts"])
            elif msg.get("kind") == "part":
                self.view.part_done(msg["job"], msg["rows"],
                                    **{k: msg[k] for k in PART_FIELDS if k in msg})

    async def close(self) -> None:
        sampler = getattr(self, "_sampler", None)
        if sampler is not None:
            sampler.stop()

    def remove_worker(self, scheduler, worker: str, **kwargs) -> None:
        self.view.remove_worker(worker)

    def fleet(self) -> dict:
        broker = self.scheduler.plugins.get(BROKER_NAME)
        if broker is not None:
            self.view.caps = {name: s["cap"] for name, s in broker.state().items()}
        return self.view.data()
