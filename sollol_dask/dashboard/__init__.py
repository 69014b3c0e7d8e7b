"""Observability on the Dask dashboard: the fleet monitor, /sollol page and /metrics."""

from ._monitor import JOBS_TOPIC, METRICS_TOPIC, MONITOR_NAME, FleetMonitor
from ._view import FleetView

__all__ = ["JOBS_TOPIC", "METRICS_TOPIC", "MONITOR_NAME", "FleetMonitor", "FleetView"]
