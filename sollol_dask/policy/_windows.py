"""Where to cut a long text into overlapping windows that fit a model's context.

Pure: characters in, ``(start, end)`` character offsets out. How many characters a
window may hold comes from a token budget and a characters-per-token ratio: measured
with the server's tokenizer where it offers one (llama.cpp ``/tokenize``), otherwise the
documented estimate below. An estimate can be wrong (code, numbers and non-Latin
scripts take more tokens per character), so the engine splits a window the server
still refuses in two and sends the halves (``split_window``).
"""

from __future__ import annotations

# English prose runs at about 4 characters per token with BPE and WordPiece vocabularies;
# 3 leaves a margin of a quarter for punctuation, numbers and rare words.
ESTIMATED_CHARS_PER_TOKEN = 3.0
# Of the context, this share is planned for; the rest absorbs a ratio that is off.
SAFETY = 0.9
# Tokens the server adds around every input (BOS/CLS, EOS/SEP).
SPECIAL_TOKENS = 2
# Consecutive windows share this share of a window, so no sentence is only ever seen cut.
OVERLAP = 0.125
# A window the server refuses is split no further than this: a row error instead.
MIN_WINDOW_CHARS = 16
# A cut looks this far back (as a share of the window) for whitespace to cut at.
_LOOK_BACK = 0.25


def window_chars(context_tokens: int, chars_per_token: float = ESTIMATED_CHARS_PER_TOKEN) -> int:
    """Characters a window may hold for a context of ``context_tokens`` tokens."""
    budget = max(1, int(context_tokens * SAFETY) - SPECIAL_TOKENS)
    return max(MIN_WINDOW_CHARS, int(budget * chars_per_token))


def plan_windows(text: str, max_chars: int, start: int = 0,
                 end: int | None = None) -> list[tuple[int, int]]:
    """Offsets of windows of at most ``max_chars`` characters covering ``text[start:end]``.

    One window when it fits. Otherwise consecutive windows overlap by ``OVERLAP`` of
    ``max_chars`` and are cut at whitespace where there is some near the limit, so words
    stay whole. Every character lies in at least one window; each window starts after
    the previous one.

    >>> plan_windows("aaaa bbbb cccc dddd", 12)
    [(0, 10), (10, 19)]
    """
    end = len(text) if end is None else end
    if max_chars < 1:
        raise ValueError("max_chars must be >= 1")
    if end - start <= max_chars:
        return [(start, end)]
    overlap = int(max_chars * OVERLAP)
    windows: list[tuple[int, int]] = []
    at = start
    while True:
        stop = at + max_chars
        if stop >= end:
            windows.append((at, end))
            return windows
        cut = _space_before(text, stop, max(at + 1, stop - int(max_chars * _LOOK_BACK)))
        windows.append((at, cut))
        following = max(at + 1, cut - overlap)
        at = _word_start(text, following, cut)


def split_window(text: str, start: int, end: int) -> list[tuple[int, int]] | None:
    """A refused window cut in two overlapping halves, or None if it is too small to cut."""
    size = end - start
    if size < 2 * MIN_WINDOW_CHARS:
        return None
    half = (size + 1) // 2
    return plan_windows(text, half + int(half * OVERLAP) + 1, start, end)


def _space_before(text: str, stop: int, lowest: int) -> int:
    """The end of a window: just after the last whitespace in ``text[lowest:stop]``,
    or ``stop`` when there is none (one long word, or a script without spaces)."""
    for i in range(stop - 1, lowest - 1, -1):
        if text[i].isspace():
            return i + 1
    return stop


def _word_start(text: str, at: int, cut: int) -> int:
    """The next window's start: ``at``, moved on to the start of a word, at ``cut`` latest."""
    for i in range(at, min(cut + 1, len(text))):
        if text[i - 1].isspace() and not text[i].isspace():
            return i
    return at
