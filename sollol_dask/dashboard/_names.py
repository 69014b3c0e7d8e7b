"""Names the monitor, the page and the status table share: the scheduler plugin holding
the fleet's data, and the page's path."""

MONITOR_NAME = "sollol-dask-fleet"
PAGE = "/sollol"
