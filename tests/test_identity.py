"""The fleet's reference: dimension, digest, and the vectors' norm as measured."""

from sollol_dask.policy._identity import choose_reference, mismatch
from sollol_dask.backends import NodeInfo


def test_normalization_is_what_the_nodes_showed():
    infos = {"a": NodeInfo(dimension=768, norm=1.0), "b": NodeInfo(dimension=768, norm=1.0),
             "c": NodeInfo(dimension=768, norm=11.5)}
    ref = choose_reference(["c", "a", "b"], infos)
    assert (ref.dimension, ref.norm, ref.normalized) == (768, 1.0, True)  # most nodes
    assert "norm 11.5, but the fleet's have norm 1 (normalized)" in mismatch(infos["c"], ref, "m")
    assert mismatch(infos["a"], ref, "m") is None
    ref = choose_reference(["c"], {"c": infos["c"]})
    assert (ref.norm, ref.normalized) == (11.5, False)
    assert mismatch(NodeInfo(dimension=768, norm=14.0), ref, "m") is None  # same model, other text
    ref = choose_reference(["d"], {"d": NodeInfo(dimension=768)})
    assert ref.norm is None and ref.normalized is None  # nothing measured: not claimed
