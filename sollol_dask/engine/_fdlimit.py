"""Enough file descriptors for a large fleet: one connection per slot may be open at once.

A router with hundreds of nodes may hold (sum of caps) connections, plus what Dask and
Python use. The soft limit is raised towards the hard one when that suffices; otherwise
the run stops before it starts with one line naming the limit and the fix, instead of
failing later with "Too many open files" on some node.
"""

from __future__ import annotations

from .._exceptions import ConfigurationError

HEADROOM = 256  # descriptors for Dask's comms, files being read and written, logs


def ensure_fd_limit(connections: int, *, resource_module=None) -> int:
    """Make sure ``connections`` + ``HEADROOM`` descriptors may be open; returns the soft
    limit in force. ``resource_module`` is for tests (the ``resource`` module's API)."""
    if resource_module is None:
        try:
            import resource as resource_module
        except ImportError:  # Windows: no such limit to check
            return -1
    needed = connections + HEADROOM
    soft, hard = resource_module.getrlimit(resource_module.RLIMIT_NOFILE)
    if soft == resource_module.RLIM_INFINITY or soft >= needed:
        return soft
    if hard == resource_module.RLIM_INFINITY or hard >= needed:
        resource_module.setrlimit(resource_module.RLIMIT_NOFILE, (needed, hard))
        return needed
    raise ConfigurationError(
        f"the fleet may need {needed} open files ({connections} connections, one per slot, "
        f"plus {HEADROOM}) but this process may open at most {hard} (RLIMIT_NOFILE, "
        f"ulimit -n): raise it (ulimit -n {needed}, or LimitNOFILE= in a systemd unit) "
        "for the worker processes, or lower the nodes' max_inflight")
