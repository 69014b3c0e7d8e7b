"""The ``chunk`` length policy: a text longer than the model's context is embedded as
overlapping windows (``policy._windows``), every window as an ordinary row of a job, and
the windows' vectors are pooled back into the row's (``policy._pooling``) or returned
one per window (``Embedder.embed_chunks``).

How many characters fit: the context is the smallest one the fleet's nodes report
(Ollama ``/api/show`` ``<arch>.context_length``, llama.cpp ``/props`` ``n_ctx``, which
is per slot) or the ``context_length`` setting, which wins. Characters per token are
measured on the text with the server's tokenizer where a node offers one (llama.cpp
``/tokenize``); otherwise ``ESTIMATED_CHARS_PER_TOKEN``. Windows go with truncation off,
so a window the server still refuses as too long comes back as such, is split in two
and sent again, down to ``MIN_WINDOW_CHARS`` (then the row is a ``too-long`` row error).
With no context known at all, texts go whole and only refused ones are split.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence

import numpy as np

from .._rows import TOO_LONG, RowError
from ..policy._pooling import pool_mean
from ..policy._windows import (MIN_WINDOW_CHARS, SAFETY, SPECIAL_TOKENS, plan_windows,
                               split_window, window_chars)
from ._job import JobResult

# run(texts, labels) -> JobResult, recording row errors (the runner's plain job)
RunTexts = Callable[[list[str], list], Awaitable[JobResult]]
# count(text) -> its tokens by the server's tokenizer, or None where there is none
CountTokens = Callable[[str], Awaitable[int | None]]


@dataclasses.dataclass
class Chunks:
    """Every row's windows and their vectors, rows in input order."""

    rows: list[int]  # per window: its row's position in the call
    spans: list[tuple[int, int]]  # per window: character offsets in its row's text
    matrix: np.ndarray  # per window: its vector
    errors: dict[int, RowError]  # row position -> why the row has no vector
    tokens: int

    def pooled(self, count: int, dimension: int, normalized: bool) -> JobResult:
        """One vector per row: the mean of its windows' (see ``policy._pooling``)."""
        matrix = np.zeros((count, dimension), np.float32)
        rows = np.asarray(self.rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        bounds = np.searchsorted(rows[order], np.arange(count + 1))
        for row in range(count):
            if row in self.errors or bounds[row] == bounds[row + 1]:
                continue
            matrix[row] = pool_mean(self.matrix[order[bounds[row]:bounds[row + 1]]], normalized)
        return JobResult(matrix, dict(sorted(self.errors.items())), self.tokens)


async def embed_windows(texts: Sequence[str], labels: Sequence, run: RunTexts, *,
                        context: int | None, count_tokens: CountTokens | None,
                        dimension: int, prefix: str = "") -> Chunks:
    """Plan, embed and re-split windows until every row has vectors or a row error.

    A text that starts with ``prefix`` (the Embedder's, e.g. "search_document: ") has it
    put before every one of its windows; offsets count from the text after the prefix."""
    heads = [prefix if prefix and text.startswith(prefix) else "" for text in texts]
    bodies = [text[len(head):] for text, head in zip(texts, heads)]
    planned = await asyncio.gather(*(_plan(body, len(head), context, count_tokens)
                                     for body, head in zip(bodies, heads)))
    spans: dict[int, list[tuple[int, int]]] = dict(enumerate(planned))
    errors: dict[int, RowError] = {}
    done: dict[int, dict[tuple[int, int], np.ndarray]] = {row: {} for row in spans}
    tokens = 0
    pending = [(row, span) for row in spans for span in spans[row]]
    while pending:
        result = await run([heads[row] + bodies[row][a:b] for row, (a, b) in pending],
                           [labels[row] for row, _ in pending])
        tokens += result.tokens
        again: list[tuple[int, tuple[int, int]]] = []
        for i, (row, span) in enumerate(pending):
            error = result.errors.get(i)
            if error is None:
                done[row][span] = result.matrix[i]
                continue
            halves = split_window(bodies[row], *span) if error.reason == TOO_LONG else None
            if halves is None:
                errors.setdefault(row, _whole_row(error, span))
                continue
            spans[row] = _replace(spans[row], span, halves)
            again.extend((row, half) for half in halves)
        pending = [(row, span) for row, span in again if row not in errors]
    rows, kept, vectors = [], [], []
    for row in sorted(spans):
        if row in errors:
            continue
        for span in spans[row]:
            rows.append(row)
            kept.append(span)
            vectors.append(done[row][span])
    matrix = np.stack(vectors) if vectors else np.empty((0, dimension), np.float32)
    return Chunks(rows, kept, matrix, errors, tokens)


async def _plan(body: str, head: int, context: int | None,
                count_tokens: CountTokens | None) -> list[tuple[int, int]]:
    """Windows of ``body``; ``head`` characters of prefix go before each."""
    if context is None:
        return [(0, len(body))]
    fits = int(context * SAFETY) - SPECIAL_TOKENS
    # Short enough even at one token a character: no need to count.
    if len(body) + head <= fits:
        return [(0, len(body))]
    limit = window_chars(context)
    counted = await count_tokens(body) if count_tokens is not None else None
    if counted:
        if counted + head <= fits:
            return [(0, len(body))]
        # The text's own characters per token, measured, with the same margin.
        limit = window_chars(context, len(body) / counted)
    return plan_windows(body, max(MIN_WINDOW_CHARS, limit - head))


def _replace(spans: list[tuple[int, int]], old: tuple[int, int],
             new: list[tuple[int, int]]) -> list[tuple[int, int]]:
    at = spans.index(old)
    return spans[:at] + new + spans[at + 1:]


def _whole_row(error: RowError, span: tuple[int, int]) -> RowError:
    """A window's error as its row's: a window that cannot be cut further says so."""
    if error.reason != TOO_LONG:
        return error
    return dataclasses.replace(error, message=(
        f"row {error.row!r}: its window at characters {span[0]}-{span[1]} is refused as "
        f"longer than the model's context even at {span[1] - span[0]} characters (server "
        f"said: {error.message}); check the node's context size (Ollama num_ctx, "
        "llama-server -c / -ub)"))


def chunk_table(chunks: Chunks):
    """``chunks`` as a ``pyarrow.Table``: row, chunk, start, end, embedding."""
    import pyarrow as pa

    rows = np.asarray(chunks.rows, dtype=np.int64)
    first = np.searchsorted(rows, rows)  # rows are in order: a window's index in its row
    dim = chunks.matrix.shape[1]
    flat = pa.array(np.ascontiguousarray(chunks.matrix, np.float32).reshape(-1))
    return pa.table({
        "row": rows,
        "chunk": (np.arange(len(rows)) - first).astype(np.int32),
        "start": np.array([a for a, _ in chunks.spans], dtype=np.int64),
        "end": np.array([b for _, b in chunks.spans], dtype=np.int64),
        "embedding": pa.FixedSizeListArray.from_arrays(flat, dim),
    })
