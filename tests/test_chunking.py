"""The chunk policy's loop (``engine._chunking``) over a fake job runner: windows sized by
the tokenizer when there is one, refused windows halved, the row error when nothing fits."""

from __future__ import annotations

import asyncio

import numpy as np

from sollol_dask._rows import TOO_LONG, RowError
from sollol_dask.engine._chunking import embed_windows
from sollol_dask.engine._job import JobResult
from sollol_dask.policy._windows import window_chars

TEXT = " ".join(f"w{i:04d}" for i in range(2000))  # 11,999 characters


def fake_run(accepts: int, sent: list):
    """A runner whose server refuses texts longer than ``accepts`` characters; a text's
    vector is (its length, 1)."""
    async def run(texts, labels):
        sent.append([len(t) for t in texts])
        matrix = np.array([[len(t), 1.0] for t in texts], np.float32)
        errors = {i: RowError(labels[i], TOO_LONG, f"row {labels[i]!r} is too long")
                  for i, t in enumerate(texts) if len(t) > accepts}
        return JobResult(matrix, errors, tokens=sum(len(t) // 6 for t in texts))
    return run


def windows(context, accepts=10**9, count=None):
    sent: list = []
    result = asyncio.run(embed_windows([TEXT, "tiny"], ["a", "b"], fake_run(accepts, sent),
                                       context=context, count_tokens=count, dimension=2))
    return result, sent


def test_without_a_tokenizer_windows_follow_the_estimate():
    result, sent = windows(512)
    assert len(sent) == 1  # nothing refused: one round
    assert max(sent[0]) <= window_chars(512) == 1374
    assert result.rows == [0] * (len(sent[0]) - 1) + [1]
    assert result.spans[-1] == (0, 4) and result.tokens == sum(n // 6 for n in sent[0])


def test_a_tokenizer_s_count_sizes_the_windows():
    async def count(text):
        return len(text) // 6 + 2  # this text: 6 characters a token

    result, sent = windows(512, count=count)
    assert max(sent[0]) <= window_chars(512, len(TEXT) / (len(TEXT) // 6 + 2))
    assert max(sent[0]) > window_chars(512)  # larger than the estimate allows: fewer windows


def test_refused_windows_are_halved_until_they_fit():
    result, sent = windows(512, accepts=400)
    assert len(sent) > 1 and all(n <= 400 for n in sent[-1])
    spans = [s for r, s in zip(result.rows, result.spans) if r == 0]
    assert spans[0][0] == 0 and spans[-1][1] == len(TEXT)
    assert all(a2 <= b1 for (_, b1), (a2, _) in zip(spans, spans[1:]))  # no gap
    assert all(b - a <= 400 for a, b in spans) and not result.errors


def test_a_row_refused_at_every_size_is_a_row_error_and_the_others_are_kept():
    result, _ = windows(512, accepts=5)
    assert list(result.errors) == [0] and result.rows == [1]
    assert result.errors[0].message.startswith("row 'a': its window at characters ")
    pooled = result.pooled(2, 2, normalized=False)
    assert pooled.matrix[0].tolist() == [0.0, 0.0] and pooled.matrix[1].tolist() == [4.0, 1.0]


def test_with_no_context_known_texts_go_whole_and_are_split_only_when_refused():
    result, sent = windows(None)
    assert sent == [[len(TEXT), 4]] and result.spans == [(0, len(TEXT)), (0, 4)]
    result, sent = windows(None, accepts=3000)
    assert sent[0] == [len(TEXT), 4] and max(sent[-1]) <= 3000
