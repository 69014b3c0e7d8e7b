"""Scheduler preload: ``dask scheduler --preload sollol_dask.dashboard.preload``.

Puts the fleet page in the dashboard before it starts, so it is listed in the menu
("More...") and in ``/individual-plots.json`` (JupyterLab's Dask panel), and installs
the slot broker and fleet monitor on the scheduler.
"""

from __future__ import annotations

from distributed.dashboard.scheduler import applications

from ..cluster._broker import SlotBroker
from ._monitor import FleetMonitor
from ._page import fleet_doc

applications["/sollol"] = fleet_doc
applications["/individual-sollol"] = fleet_doc


def dask_setup(scheduler) -> None:
    scheduler.add_plugin(SlotBroker(), name=SlotBroker.name)
    scheduler.add_plugin(FleetMonitor(), name=FleetMonitor.name)
