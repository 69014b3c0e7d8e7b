"""Every vector a node returns is checked, row by row, before it is stored.

A node can answer 200 with vectors a parser accepts and a corpus must not: too few or too
many, OpenAI ``index`` values that are not each row once (rows would be misplaced), NaN
or infinity, all zeros, another dimension than the fleet's, or a norm unlike the fleet's
(an unnormalized vector among normalized ones). Each is a ``BadResponseError`` naming the
node and the batch item; the router retries the batch on another node and quarantines a
node that keeps doing it.

What no check can see: right-shaped vectors of the right norm in the wrong order, or
for other texts. Those look exactly like good ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._exceptions import BadResponseError
from .._outcome import Failure
from ..policy._identity import NORM_RATIO, NORM_TOLERANCE, is_normalized
from ._base import bad_response

def typical_norm(matrix: np.ndarray) -> float | None:
    """The median L2 norm of the rows (a probe's), or None for no rows."""
    if matrix.ndim != 2 or not len(matrix):
        return None
    norm = float(np.median(np.linalg.norm(matrix.astype(np.float64), axis=1)))
    return 1.0 if is_normalized(norm) else norm


def check_rows(matrix: np.ndarray, count: int, node: str, *, dimension: int | None = None,
               norm: float | None = None) -> np.ndarray:
    """``matrix`` if it is ``count`` usable vectors, else a ``BadResponseError``.

    ``dimension`` and ``norm`` are the fleet's, when known: a vector of another
    dimension excludes the node (never mixed); one whose norm is far from the fleet's
    is a bad answer."""
    rows = matrix.shape[0] if matrix.ndim else 0
    if matrix.ndim != 2 or rows != count:
        raise bad_response(node, f"{node} returned {rows} vectors for {count} texts")
    if not count:
        return matrix
    if dimension is not None and matrix.shape[1] != dimension:
        raise BadResponseError(
            f"{node} returned vectors of dimension {matrix.shape[1]}, the fleet uses "
            f"{dimension}: node excluded so vectors never mix", node=node,
            failure=Failure.NODE_FATAL)
    with np.errstate(over="ignore", invalid="ignore"):
        squares = np.einsum("ij,ij->i", matrix, matrix)  # one pass: NaN/inf propagate
    finite = np.isfinite(squares)
    if not finite.all():
        item = int(np.flatnonzero(~finite)[0])
        what = "a non-finite vector" if not np.isfinite(matrix[item]).all() \
            else "a vector of overflowing norm"
        raise bad_response(node, f"{node} returned {what} (batch item {item})")
    if not squares.all():
        item = int(np.flatnonzero(squares == 0)[0])
        raise bad_response(node, f"{node} returned an all-zero vector (batch item {item})")
    if norm is not None:
        norms = np.sqrt(squares)
        if is_normalized(norm):
            off = np.abs(norms - 1.0) > NORM_TOLERANCE
            fleet = "1 (normalized)"
        else:
            off = (norms > norm * NORM_RATIO) | (norms < norm / NORM_RATIO)
            fleet = f"about {norm:.4g}"
        if off.any():
            item = int(np.flatnonzero(off)[0])
            raise bad_response(
                node, f"{node} returned a vector of norm {float(norms[item]):.4g} (batch item "
                f"{item}); the fleet's vectors have norm {fleet}: not mixed in")
    return matrix


def check_indexes(indexes: Sequence, count: int, node: str) -> np.ndarray:
    """OpenAI ``index`` values as an int array, if they are each of 0..count-1 once."""
    if len(indexes) == count and all(type(i) is int for i in indexes):
        order = np.asarray(indexes, dtype=np.int64)
        if count == 0 or np.array_equal(np.sort(order), np.arange(count)):
            return order
    shown = ", ".join(repr(i)[:20] for i in indexes[:8]) + (", ..." if len(indexes) > 8 else "")
    raise bad_response(node, f"{node} returned rows with index values [{shown}] for {count} texts "
                       f"(each of 0..{count - 1} once expected): rows cannot be placed")


def reported_count(value: object) -> int | None:
    """A token count as a server reports it, if it is a plausible one (a non-negative
    integer): anything else is treated as not reported, never as an error."""
    if type(value) is int and 0 <= value < 2**53:
        return value
    return None
