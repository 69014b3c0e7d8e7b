"""A partition's task leaves its worker's thread pool once all its texts are sent.

A task holds one of the worker's threads until its partition is embedded. Near a
partition's end its last batches are in flight and it has nothing more to send, so with
one partition per thread the fleet's slots empty out at every partition boundary: on a
large fleet a partition of a few thousand rows is little more than that tail. Once every
text of the partition is sent, the task ``secede``s (distributed's own way out of the
pool, as for a task that waits on other tasks): the worker, and the scheduler, start the
next partition at once, and its batches take the slots the tail frees. The seceded task
finishes on its own thread (writing its part included) and does not rejoin the pool:
rejoining would wait for a thread the next partition holds.

This bounds itself: a task leaves only when its texts are all in flight or done, so the
partitions between "sent" and "finished" hold at most the fleet's slots' worth of
batches, and partitions still being read or sent are one per thread, as before.
"""

from __future__ import annotations

from collections.abc import Callable

from distributed import secede
from distributed.threadpoolexecutor import thread_state as pool_thread
from distributed.worker import thread_state as task_thread


def leave_pool_when_sent() -> Callable[[], None] | None:
    """``secede`` if this thread is running a task in a Dask worker's thread pool (else
    None: a plain thread, or a task that already left the pool)."""
    # Two thread-locals: the task's (its key, set while it runs) and the pool's own
    # ("proceed" is False once the thread has left the pool).
    if getattr(task_thread, "key", None) is None or not getattr(pool_thread, "proceed", False):
        return None
    return secede
