"""What became of one request to a node: the one vocabulary every layer speaks.

The transport and the backends classify an answer into a ``Failure`` (carried by the
exception they raise), the router acts on it, the balancer judges the node by it, and the
slot broker on the scheduler hears it again (as its ``.value``, a msgpack-able string).
Success is ``failure=None``.
"""

from __future__ import annotations

import dataclasses
import enum


class Failure(enum.Enum):
    """How a failed request is handled, from the router to the balancer."""

    TRANSIENT = "transient"  # try another node; counts towards ejecting this node
    NODE_FATAL = "node"  # this node cannot serve the run (auth, model missing): drop it
    CALLER = "caller"  # the caller's request is wrong: raise at once
    TOO_LONG = "too-long"  # a text exceeds the context: find the row and raise
    TOO_BIG = "too-big"  # the batch is larger than the server accepts: split it
    # The node answered, but wrongly (vectors that fail a check, a body that is not JSON,
    # too large or never ends): another node is tried, and a node that keeps doing it is
    # quarantined (probes do not clear it; only a good answer does).
    BAD_RESPONSE = "bad-response"
    TIMEOUT = "timeout"  # no answer in time: like TRANSIENT, and a slow first answer
    # The node asked us to wait (429 or 503 with Retry-After): it gets nothing until then,
    # and it is not held against it.
    BUSY = "busy"
    # We abandoned the request (a hedge copy won, the run stopped, a lease went unused):
    # no verdict on the node.
    CANCELLED = "cancelled"

    @property
    def request_fault(self) -> bool:
        """The request was wrong for the server (too long, too many inputs, a bad
        argument), not the node unwell: counted, but never held against the node."""
        return self in _REQUEST_FAULTS


_REQUEST_FAULTS = frozenset({Failure.TOO_LONG, Failure.TOO_BIG, Failure.CALLER})


@dataclasses.dataclass(frozen=True)
class Outcome:
    """One request's result as a slot source hears it when the slot is given back."""

    texts: int = 0
    seconds: float = 0.0
    tokens: int = 0  # what the server said the request cost (0: it said nothing)
    failure: Failure | None = None  # None: success
    hard: bool = False  # the node looks unreachable (refused, timed out): eject at once
    retry_after: float | None = None  # a busy node asked for this many seconds
    reason: str = ""  # the error, for the node's state (kept on this process only)


CANCELLED = Outcome(failure=Failure.CANCELLED)
