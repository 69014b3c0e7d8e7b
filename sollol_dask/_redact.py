"""The one redaction layer: secrets never reach a log record, an error or a page.

Secrets are header values (an ``Authorization`` token, an API key) and the credentials
of a ``https://user:password@host`` URL. Every :class:`~sollol_dask.Node` registers its
secrets here when it is built or unpickled, so every process that holds one (the client,
each Dask worker) knows them; header values read from the environment are registered
where they are read. Then:

- every log record created in the process, from any logger (``aiohttp``, ``asyncio``,
  ``distributed``, ours, yours, ones created later), has the secrets in its message,
  arguments and exception text replaced by ``***``;
- every ``SollolError`` message passes through :func:`redact` (see ``_exceptions``);
- what leaves the process pickled (the WorkerPlugin on the scheduler, task graphs) holds
  header values sealed, not as text a DEBUG log of the bytes would show (``_secrets``).

Why a record factory rather than a ``logging.Filter`` on handlers: a filter on a handler
misses handlers added later (``logging.basicConfig`` after import, pytest's capture,
distributed re-reading its logging config, which installs its own handler on the
``distributed`` logger with ``propagate=False``), and a filter on a logger misses records
of its child loggers (``aiohttp.client``, ``distributed.core``). The record factory is
called for every record of every logger, once, before any handler sees it. It chains to
the factory that was in place, as ``logging`` documents. :class:`RedactingFilter` does the
same for records made elsewhere (``logging.makeLogRecord``, another process).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from urllib.parse import quote

MASK = "***"
# Shorter values cannot be told apart from ordinary text (a header "X-Debug: 1" would
# mask every digit 1 in every log); they are still never shown by sollol_dask itself.
MIN_LENGTH = 4

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None  # longest first, so a secret inside another goes whole
_formatter = logging.Formatter()
_installed = False


def register_secret(value: object) -> None:
    """Mask ``value`` (and the forms it takes in reprs, URLs and JSON) from now on."""
    global _pattern
    if not isinstance(value, str) or len(value) < MIN_LENGTH:
        return
    forms = _forms(value)
    scheme, _, credential = value.partition(" ")
    if credential and scheme.isalpha():  # "Bearer <token>": the token alone is secret too
        forms |= _forms(credential)
    with _lock:
        new = {form for form in forms if len(form) >= MIN_LENGTH} - _secrets
        if not new:
            return
        _secrets.update(new)
        ordered = sorted(_secrets, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(secret) for secret in ordered))


def _forms(value: str) -> set[str]:
    return {
        value,
        repr(value)[1:-1],  # inside a str repr (quotes, backslashes escaped)
        repr(value.encode())[2:-1],  # inside a bytes repr (b'...'): wire dumps, pickles
        quote(value, safe=""),  # percent-encoded in a URL
        quote(value),
        json.dumps(value)[1:-1],  # inside JSON
    }


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    pattern = _pattern
    return text if pattern is None else pattern.sub(MASK, text)


def contains_secret(text: str) -> bool:
    pattern = _pattern
    return pattern is not None and pattern.search(text) is not None


def redact_record(record: logging.LogRecord) -> None:
    """Mask secrets in ``record``'s message, arguments and exception text, in place."""
    pattern = _pattern
    if pattern is None:  # no Node with a secret in this process: nothing to do
        return
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: logging reports it; show no arguments there
        record.args = None
        message = str(record.msg)
    clean = pattern.sub(MASK, message)
    if clean != message:
        record.msg, record.args = clean, None
    if record.exc_info and record.exc_info[0] is not None:
        text = record.exc_text or _formatter.formatException(record.exc_info)
        if pattern.search(text):
            # Formatters print exc_text when it is set; dropping exc_info stops one that
            # formats the exception again from printing the secret.
            record.exc_text, record.exc_info = pattern.sub(MASK, text), None
    elif record.exc_text:
        record.exc_text = pattern.sub(MASK, record.exc_text)
    if record.stack_info:
        record.stack_info = pattern.sub(MASK, record.stack_info)


class RedactingFilter(logging.Filter):
    """Masks secrets in records that did not come from this process's record factory
    (``logging.makeLogRecord``, a ``QueueHandler`` fed by another process)."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


def install() -> None:
    """Redact every log record this process creates (idempotent; done on import)."""
    global _installed
    with _lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def redacting_factory(*args, **kwargs) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            redact_record(record)
            return record

        logging.setLogRecordFactory(redacting_factory)
        _installed = True


def redact_url(url: object) -> str:
    """A URL as typed, safe to show: ``http://user:***@host:1/p``.

    Works on URLs a parser would misread too (a password holding ``/``, ``#`` or ``?``):
    everything up to the last ``@`` after the scheme is treated as credentials.
    """
    text = str(url)
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    if "@" not in rest:
        return text
    userinfo, host = rest.rsplit("@", 1)
    user = userinfo.split(":", 1)[0]
    shown = f"{user}:{MASK}" if user and not any(c in user for c in "/?#") else MASK
    return f"{scheme}{sep}{shown}@{host}"


install()
