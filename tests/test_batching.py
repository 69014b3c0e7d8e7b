import numpy as np
import pytest

from sollol_dask._batching import dedupe, split_batches


def test_dedupe_keeps_first_seen_order_and_maps_back():
    texts = ["b", "a", "b", "c", "a"]
    unique, inverse = dedupe(texts)
    assert unique == ["b", "a", "c"]
    assert [unique[i] for i in inverse] == texts
    assert inverse.dtype == np.int64


def test_split_by_count():
    assert split_batches([1] * 5, max_count=2, max_chars=100) == [range(0, 2), range(2, 4), range(4, 5)]


def test_split_by_characters_and_oversized_item_alone():
    assert split_batches([4, 4, 4, 20, 1], max_count=10, max_chars=10) == [
        range(0, 2), range(2, 3), range(3, 4), range(4, 5)]


def test_split_empty_and_invalid():
    assert split_batches([], 4, 4) == []
    with pytest.raises(ValueError):
        split_batches([1], 0, 4)
