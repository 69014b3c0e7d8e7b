"""``RowProgress``: how many rows are embedded, shown where the user is looking.

Rows, not tasks: counts arrive from any thread (``advance``/``set_part``), the display
is drawn only by the thread that created it (``refresh``), so a Jupyter widget is never
touched from Dask's or the router's threads. Where it goes:

- a Jupyter kernel with ``ipywidgets``: tqdm's notebook widget;
- a Jupyter kernel without ``ipywidgets``, or a terminal: tqdm's text bar on stderr
  (rows, percentage, rate, ETA), never on stdout, which holds only the report;
- stderr not a terminal (a pipe, a log file, a batch job): no bar, one plain line every
  ``LOG_EVERY`` seconds, so a ten-hour run writes a few hundred lines, not megabytes.

A display that fails (a frontend, a closed stream) is switched off with a log line: a
progress failure never stops a run.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

logger = logging.getLogger(__name__)

LOG_EVERY = 30.0  # seconds between plain progress lines when stderr is not a terminal
DRAW_EVERY = 0.5  # seconds between redraws of a bar
LINE_FORMAT = "{desc}: {n_fmt}/{total_fmt} rows ({percentage:.0f}%), {rate_fmt}, " \
              "elapsed {elapsed}, ETA {remaining}"


def in_jupyter_kernel() -> bool:
    """Whether this process is a Jupyter (IPython) kernel, whose frontend shows widgets
    and renders a text bar's carriage returns."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:  # an IPython too old or half imported: not a kernel we can use
        return False
    return shell is not None and getattr(shell, "kernel", None) is not None


def _has_ipywidgets() -> bool:
    try:
        import ipywidgets  # noqa: F401
    except Exception:  # ImportError, or a broken install: use the text bar
        return False
    return True


class RowProgress:
    """Rows done out of ``total``, starting at ``initial`` (rows finished by an earlier
    run). ``stream``: where text goes (default ``sys.stderr``); ``clock`` is injectable."""

    def __init__(self, total: int, *, initial: int = 0, desc: str = "embedding",
                 stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.initial = initial
        self.desc = desc
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self._lock = threading.Lock()
        self._parts: dict[Any, int] = {}  # rows done per unit of work (part, chunk)
        self._loose = 0  # rows counted without a part
        self._started = clock()
        self._next_line = self._started + LOG_EVERY
        self._bar = None
        self.mode = "off"
        try:
            self.mode, self._bar = self._open()
        except Exception:
            logger.info("progress display unavailable; the run goes on without it",
                        exc_info=True)

    def _open(self):
        kwargs = dict(total=self.total, initial=self.initial, desc=self.desc, unit=" rows",
                      mininterval=DRAW_EVERY, smoothing=0.1)
        if in_jupyter_kernel():
            if _has_ipywidgets():
                from tqdm.notebook import tqdm as notebook_tqdm

                return "widget", notebook_tqdm(**kwargs)
            from tqdm.std import tqdm as text_tqdm

            return "text", text_tqdm(file=self.stream, **kwargs)
        if _isatty(self.stream):
            from tqdm.std import tqdm as text_tqdm

            return "text", text_tqdm(file=self.stream, dynamic_ncols=True, **kwargs)
        return "lines", None

    # -- counting: any thread ------------------------------------------------------------

    def advance(self, rows: int) -> None:
        with self._lock:
            self._loose += rows

    def set_part(self, part: Any, rows: int) -> None:
        """Rows done so far in ``part`` (a running total: repeats and reordering are
        harmless, and a part retried elsewhere never counts twice)."""
        with self._lock:
            self._parts[part] = max(rows, self._parts.get(part, 0))

    @property
    def done(self) -> int:
        with self._lock:
            return min(self.total, self.initial + self._loose + sum(self._parts.values()))

    # -- drawing: the creating thread ----------------------------------------------------

    def refresh(self) -> None:
        try:
            self._draw()
        except Exception:
            logger.info("progress display failed; the run goes on without it", exc_info=True)
            self._close_bar()
            self.mode = "off"

    def _draw(self) -> None:
        done = self.done
        if self._bar is not None:
            if done > self._bar.n:
                self._bar.update(done - self._bar.n)
        elif self.mode == "lines" and self.clock() >= self._next_line:
            self._next_line = self.clock() + LOG_EVERY
            self.stream.write(self.line(done) + "\n")
            self.stream.flush()

    def line(self, done: int | None = None) -> str:
        """One plain progress line: rows, percentage, rate and ETA (tqdm's formatting)."""
        from tqdm.std import tqdm as text_tqdm

        done = self.done if done is None else done
        elapsed = self.clock() - self._started
        rate = (done - self.initial) / elapsed if elapsed > 0 else None
        return text_tqdm.format_meter(done, self.total, elapsed, prefix=self.desc, unit=" rows",
                                      rate=rate, bar_format=LINE_FORMAT, initial=self.initial)

    def close(self) -> None:
        """Draw the last count and release the display (keeps a notebook widget shown)."""
        self.refresh()
        self._close_bar()

    def _close_bar(self) -> None:
        bar, self._bar = self._bar, None
        if bar is not None:
            try:
                bar.close()
            except Exception:
                logger.debug("closing the progress display failed", exc_info=True)

    def __enter__(self) -> RowProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
