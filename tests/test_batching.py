import numpy as np

from sollol_dask._batching import dedupe


def test_dedupe_keeps_first_seen_order_and_maps_back():
    texts = ["b", "a", "b", "c", "a"]
    unique, inverse = dedupe(texts)
    assert unique == ["b", "a", "c"]
    assert [unique[i] for i in inverse] == texts
    assert inverse.dtype == np.int64

