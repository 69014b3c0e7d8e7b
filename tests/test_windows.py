"""Pure parts of the chunk length policy: window planning and pooling."""

from __future__ import annotations

import numpy as np
import pytest

from sollol_dask.policy._pooling import pool_mean
from sollol_dask.policy._windows import (MIN_WINDOW_CHARS, OVERLAP, plan_windows, split_window,
                                         window_chars)


def prose(words: int) -> str:
    return " ".join(f"word{i % 97}" for i in range(words))


def test_a_text_that_fits_is_one_window():
    assert plan_windows("short text", 100) == [(0, 10)]
    assert plan_windows("", 100) == [(0, 0)]


@pytest.mark.parametrize("max_chars", [40, 97, 500, 1746])
def test_windows_cover_the_text_overlap_and_cut_between_words(max_chars):
    text = prose(3000)
    windows = plan_windows(text, max_chars)
    assert windows[0][0] == 0 and windows[-1][1] == len(text)
    assert all(0 < b - a <= max_chars for a, b in windows)
    for (a1, b1), (a2, b2) in zip(windows, windows[1:]):
        assert a1 < a2 <= b1 < b2  # in order, none leaving a gap
        # overlapping the next by whole words, when the overlap can hold one
        assert a2 < b1 or max_chars * OVERLAP < len("word96 ")
        assert b1 - a2 <= int(max_chars * OVERLAP)
        assert text[b1 - 1] == " " and text[a2 - 1] == " " and text[a2] != " "  # whole words


def test_a_text_without_spaces_is_cut_at_the_limit():
    assert plan_windows("x" * 25, 10) == [(0, 10), (9, 19), (18, 25)]


def test_a_refused_window_is_cut_in_two_overlapping_halves_down_to_a_minimum():
    text = prose(100)
    halves = split_window(text, 100, 300)
    assert halves[0][0] == 100 and halves[-1][1] == 300 and len(halves) == 2
    assert halves[1][0] < halves[0][1]
    assert split_window(text, 0, 2 * MIN_WINDOW_CHARS - 1) is None


def test_window_size_from_context_and_characters_per_token():
    # 90% of 512 tokens, less 2 special tokens, at the estimate of 3 characters a token
    assert window_chars(512) == (int(512 * 0.9) - 2) * 3 == 1374
    assert window_chars(512, 3.81) == int(458 * 3.81)  # a measured ratio
    assert window_chars(4) == MIN_WINDOW_CHARS


def test_pooling_is_the_mean_normalised_again_when_the_vectors_are():
    vectors = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    np.testing.assert_allclose(pool_mean(vectors, normalized=True), [2 ** -0.5, 2 ** -0.5],
                               rtol=1e-6)
    np.testing.assert_array_equal(pool_mean(vectors * 4, normalized=False), [2.0, 2.0])
    one = np.array([[0.6, 0.8]], np.float32)
    assert pool_mean(one, True).dtype == np.float32 and np.array_equal(pool_mean(one, True), one[0])
