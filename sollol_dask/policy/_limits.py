"""Bounds on what a node can make us hold: response bodies, error text, waits it asks for.

A node is not trusted to be small or polite: a proxy's error page, a 36 MB model list or
a body that never ends must cost a bounded amount of memory, and its words a bounded
amount of space in every exception, log line, warning and metrics event (those reach the
scheduler once a second). Pure functions and constants, no I/O.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Iterable

MIB = 1024 * 1024
# Describe and probe answers (/api/tags, /api/show, /props, a one-text embedding): a
# real node's are kilobytes; a thousand models listed are well under 1 MiB.
PROBE_BYTES = 4 * MIB
# Of an error answer only the first words are used (classification and a message).
ERROR_BODY_BYTES = 64 * 1024
# An embedding answer: JSON floats take at most ~24 characters (a float32 printed as a
# float64), pretty-printing adds indentation: 48 bytes per value covers both, plus room
# for the envelope (usage, model names). Base64 answers are far smaller.
BYTES_PER_VALUE = 48
EMBED_OVERHEAD = 1 * MIB
# A dimension not known yet (the fleet check): the largest common embedding models.
LARGE_DIMENSION = 4096

SERVER_TEXT_CHARS = 300  # of a server's error text, quoted in a message
ERROR_TEXT_CHARS = 500  # of a message (quoting server text) in a reason, log line, warning
NAMES_SHOWN = 5  # model names listed in a "not found" message
MAX_RETRY_AFTER = 60.0  # seconds: a node asking for longer is retried after this anyway


def embed_limit(texts: int, dimension: int | None, configured: int | None = None) -> int:
    """Most bytes an answer embedding ``texts`` texts may have: ``configured`` if the
    user set ``max_response_bytes``, else derived from the batch and the dimension."""
    if configured:
        return configured
    return max(1, texts) * (dimension or LARGE_DIMENSION) * BYTES_PER_VALUE + EMBED_OVERHEAD


def clip(text: object, limit: int = ERROR_TEXT_CHARS) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    text = str(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def some_names(names: Iterable[str], shown: int = NAMES_SHOWN) -> str:
    """``a, b, c and 120 more``: a list a node controls, in a message of bounded size."""
    names = sorted(clip(n, 80) for n in names)
    if not names:
        return "none"
    head = ", ".join(names[:shown])
    return head if len(names) <= shown else f"{head} and {len(names) - shown} more"


def size_text(size: int) -> str:
    return f"{size / MIB:g} MiB" if size >= MIB and size % (MIB // 4) == 0 else f"{size:,} bytes"


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delay-seconds or an HTTP date), within
    0..MAX_RETRY_AFTER; None when absent or unreadable. ``now``: epoch seconds."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None or when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return min(MAX_RETRY_AFTER, max(0.0, seconds))
