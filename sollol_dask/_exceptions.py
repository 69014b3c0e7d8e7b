"""The errors sollol_dask raises, all under one base class.

    SollolError
    ├── ConfigurationError        bad settings: no model, a malformed node URL, ...
    ├── NoNodeAvailableError      no node can serve the model (all down, excluded or ejected)
    ├── NodeError                 a node answered with an error or did not answer
    │   └── ModelNotFoundError    the node does not have the model (pull it first)
    ├── BadResponseError          a node answered 200 with unusable vectors (count, index,
    │                             dimension, non-finite, all-zero, norm unlike the fleet's,
    │                             malformed body)
    ├── InputError                a text the caller gave cannot be embedded (wrong type,
    │                             too long with truncate=False); names the row
    └── OutputError               the output location cannot be written or does not
                                  match what a resumed run expects

    UserWarning
    ├── FleetWarning              a node was left out of a run (model missing, other
    │                             digest or dimension, credentials)
    └── InsecureTLSWarning        verify=False with https:// nodes

Foreign exceptions are mapped to these in one place each: HTTP libraries in _transport, orjson in the backends.
Messages never contain header values or URL passwords: nodes are shown by their URL
(credentials are moved to a header), and every message passes the redaction layer.
"""

from __future__ import annotations

from ._outcome import Failure
from ._redact import redact


class SollolError(Exception):
    """Base of every error sollol_dask raises on purpose."""

    def __init__(self, *args: object) -> None:
        # The redaction layer: a node's error text (an echoed header, say) is masked too.
        super().__init__(*(redact(a) if isinstance(a, str) else a for a in args))

    def __reduce__(self):
        # Errors cross Dask processes pickled: keep every attribute (node, status, the
        # failure kind, the row), not just the message, without re-running __init__.
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


def _rebuild(cls: type, args: tuple, state: dict) -> SollolError:
    err = cls.__new__(cls)
    Exception.__init__(err, *args)
    err.__dict__.update(state)
    return err


class ConfigurationError(SollolError, ValueError):
    """The settings given cannot work; the message says which one and why."""


class NoNodeAvailableError(SollolError):
    """No node can take work: each node's reason is in ``.reasons`` (url -> reason)."""

    def __init__(self, message: str, reasons: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.reasons = dict(reasons or {})


class NodeError(SollolError):
    """A node failed a request. ``retryable`` tells whether another node may succeed.

    ``failure`` is what the router does about it (``Failure``); ``hard`` marks a node
    that looks unreachable (connection refused, timeout: ejected at once);
    ``retry_after``: seconds the node asked us to wait (429/503 with Retry-After);
    ``max_inputs``: for a batch refused as too large, the server's limit if it said.
    """

    def __init__(
        self, message: str, *, node: str, status: int | None = None, retryable: bool = True,
        failure: Failure = Failure.TRANSIENT, hard: bool = False,
        retry_after: float | None = None, max_inputs: int | None = None,
    ) -> None:
        super().__init__(message)
        self.node = node
        self.status = status
        self.retryable = retryable
        self.failure = failure
        self.hard = hard
        self.retry_after = retry_after
        self.max_inputs = max_inputs


class ModelNotFoundError(NodeError):
    """The node does not serve the model; ``ollama pull`` it there or fix the name."""

    def __init__(self, message: str, *, node: str, status: int | None = 404) -> None:
        super().__init__(message, node=node, status=status, retryable=False,
                         failure=Failure.NODE_FATAL)


class BadResponseError(SollolError):
    """A node answered, but its vectors cannot be used (wrong count, dimension, NaN, ...).

    ``failure``: ``BAD_RESPONSE`` (a strike against the node) unless the answer shows
    the node cannot serve the run at all (``NODE_FATAL``) or is a garbled probe answer
    (``TRANSIENT``)."""

    def __init__(self, message: str, *, node: str | None = None,
                 failure: Failure = Failure.BAD_RESPONSE, hard: bool = False) -> None:
        super().__init__(message)
        self.node = node
        self.failure = failure
        self.hard = hard


class InputError(SollolError, ValueError):
    """A caller's text cannot be embedded. ``row`` (and ``partition`` if known) say where."""

    def __init__(self, message: str, *, row: object = None, partition: object = None) -> None:
        super().__init__(message)
        self.row = row
        self.partition = partition


class OutputError(SollolError):
    """The output cannot be written, or exists from a run with other settings."""


class FleetWarning(UserWarning):
    """A node was left out of a run (model missing, other digest or dimension, down).
    Raised in the thread that called ``embed``/``check_fleet``, not the engine's."""


class InsecureTLSWarning(UserWarning):
    """``verify=False``: https:// nodes are not authenticated, so a token sent to them can
    be read by anyone on the path."""
