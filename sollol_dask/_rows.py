"""Row outcomes: why a row got no vector, as written to ``_errors/`` and counted in reports.

A row error is a row that cannot be embedded for a reason of its own: the value is not
text, the text is not valid Unicode, it is longer than the model's context (under the
``reject`` length policy), or the servers keep answering wrongly for that row alone (a
NaN vector, a 400 for that input) while they answer the rows around it. Failures of a
node or of the network are never row errors: they are retried on other nodes, and fail
the run if no node can take the work.
"""

from __future__ import annotations

import dataclasses

NOT_TEXT = "not-text"
INVALID_UNICODE = "invalid-unicode"
TOO_LONG = "too-long"
BAD_ANSWER = "bad-answer"
REASONS = (NOT_TEXT, INVALID_UNICODE, TOO_LONG, BAD_ANSWER)


@dataclasses.dataclass(frozen=True)
class RowError:
    """One row without a vector: where it is, why, and the node that said so (if any)."""

    row: object  # the caller's row id (a file's row number in embed_parquet)
    reason: str  # one of REASONS
    message: str  # one line for people: the row, what is wrong, what to do
    node: str | None = None

    def __post_init__(self) -> None:
        if self.reason not in REASONS:
            raise ValueError(f"unknown row error reason {self.reason!r}")


def invalid_unicode(text: str) -> int | None:
    """The index of the first lone surrogate in ``text`` (JSON cannot carry it), or None."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as bad:
        return bad.start
    return None
