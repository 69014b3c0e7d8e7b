"""Which Dask client a run uses: the one given, the current one, or a LocalCluster."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading

from distributed import Client, LocalCluster, default_client

logger = logging.getLogger(__name__)


def current_client() -> Client | None:
    try:
        return default_client()
    except ValueError:
        return None


@contextlib.contextmanager
def client_for_run(client: Client | str | None = None):
    """Yield a client: ``client`` (or a scheduler address), else the current client, else
    a LocalCluster sized to the machine that is closed when the run ends."""
    if isinstance(client, str):
        with Client(client) as connected:
            yield connected
        return
    if client is None:
        client = current_client()
    if client is not None:
        yield client
        return
    workers = max(1, min(4, os.cpu_count() or 1))
    logger.info("no Dask client: starting a LocalCluster with %d worker processes", workers)
    with _workers_ignore_ctrl_c():
        cluster = LocalCluster(n_workers=workers, threads_per_worker=2, processes=True,
                               dashboard_address="127.0.0.1:0", host="127.0.0.1")
    with cluster, Client(cluster) as local:
        yield local


@contextlib.contextmanager
def _workers_ignore_ctrl_c():
    """Start worker processes with SIGINT ignored (inherited through exec). Ctrl-C in a
    terminal reaches the whole process group: the workers would each die printing
    tracebacks while this process, which got the same KeyboardInterrupt, already stops
    the run and closes them in order. Only from the main thread (signals live there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
