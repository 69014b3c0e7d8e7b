"""Observability: the scheduler's fleet monitor, the ``/sollol`` page, Prometheus series,
and the status table."""

from ._monitor import FleetMonitor
from ._names import MONITOR_NAME
from ._status import FleetStatus
from ._view import FleetView

__all__ = ["MONITOR_NAME", "FleetMonitor", "FleetStatus", "FleetView"]
