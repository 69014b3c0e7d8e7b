"""``FleetMonitor``: the scheduler's side of observability.

Worker routers send a snapshot about once a second (``worker.log_event`` on topic
``sollol-dask-metrics``; jobs on ``sollol-dask-jobs``); the monitor merges them into a
``FleetView``, serves it to the page, `/metrics` and `sollol-dask status`, and mounts the
``/sollol`` page on the running dashboard if a preload module has not already.
"""

from __future__ import annotations

import logging

from distributed.diagnostics.plugin import SchedulerPlugin

from ._view import FleetView

logger = logging.getLogger(__name__)

MONITOR_NAME = "sollol-dask-fleet"
METRICS_TOPIC = "sollol-dask-metrics"
JOBS_TOPIC = "sollol-dask-jobs"
PAGE = "/sollol"


class FleetMonitor(SchedulerPlugin):
    name = MONITOR_NAME
    idempotent = True

    async def start(self, scheduler) -> None:
        self.scheduler = scheduler
        self.view = FleetView()
        scheduler.handlers["sollol_fleet"] = self.fleet
        from ._prometheus import register_collector

        register_collector(self)
        try:
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
                self.view.part_done(msg["job"], msg["rows"])

    def remove_worker(self, scheduler, worker: str, **kwargs) -> None:
        self.view.remove_worker(worker)

    def fleet(self) -> dict:
        broker = self.scheduler.plugins.get("sollol-dask-slots")
        if broker is not None:
            self.view.caps = {name: s["cap"] for name, s in broker.state().items()}
        return self.view.data()


def mount_page(scheduler) -> bool:
    """Serve ``/sollol`` on this scheduler's dashboard, unless it already is."""
    from bokeh.server.tornado import BokehTornado
    from distributed.dashboard.core import BokehApplication
    from tornado.ioloop import IOLoop

    from ._page import fleet_doc

    apps = getattr(scheduler.http_application, "applications", None)
    if apps is None:
        return False
    if any(isinstance(app, BokehTornado) and PAGE in app.app_paths for app in apps):
        return False  # the preload module put it in the dashboard (and its menu)
    bokeh_app = BokehApplication({PAGE: fleet_doc}, scheduler)
    scheduler.http_application.add_application(bokeh_app)
    bokeh_app.initialize(IOLoop.current())
    return True
