"""One partition's worth of work, shared by dataframes, bags and parquet parts:
sort values into texts and nulls, embed the texts, build the output column."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa

from .._exceptions import ConfigurationError, InputError
from .._rows import RowError
from ..engine._router import Router

# raise: the first non-text value fails the call; null: non-text values become null
# vectors, counted; record: every row that cannot be embedded for a reason of its own
# (not text, not valid Unicode, too long, wrongly answered) becomes a null vector and a
# recorded row error (see _rows), the call goes on.
ON_INVALID = ("raise", "null", "record")


@dataclasses.dataclass
class PartitionVectors:
    matrix: np.ndarray  # (rows, dim) float32; zeros where ``valid`` is False
    valid: np.ndarray  # bool per row
    null_rows: int  # null, NaN, empty or whitespace texts
    invalid_rows: int  # non-text values turned into nulls by on_invalid="null"
    errors: list[RowError] = dataclasses.field(default_factory=list)  # on_invalid="record"
    tokens: int = 0  # as the servers reported them
    # Per row: the server cut the text (asked for with find_truncated); None: not asked
    truncated: np.ndarray | None = None
    # Per row: tokens by a node's tokenizer, -1 where unknown (asked for with count_tokens)
    n_tokens: np.ndarray | None = None


def check_on_invalid(on_invalid: str) -> None:
    if on_invalid not in ON_INVALID:
        raise ConfigurationError(f"on_invalid must be one of {ON_INVALID}, not {on_invalid!r}")


def embed_values(router: Router, values: Sequence, labels: Sequence, dim: int, *,
                 partition: object = None, on_invalid: str = "raise",
                 on_rows: Callable[[int], None] | None = None,
                 prefix: str = "", find_truncated: bool = False,
                 count_tokens: bool = False,
                 handed_out: Callable[[], None] | None = None,
                 pending: int | None = None) -> PartitionVectors:
    """Embed the text values (each after ``prefix``); None, NaN, "" and whitespace-only
    become null vectors (a prefix alone is not a text).

    A value that is neither text nor missing raises ``InputError`` naming the partition
    and row, unless ``on_invalid="null"`` (then it is a null vector, counted) or
    ``"record"`` (then it, and any row the router cannot embed for a reason of its own, is
    a null vector and a ``RowError`` in ``errors``).
    ``on_rows(n)``: n more rows are done (null rows at once, texts as batches return).
    ``handed_out()``: every text has been sent (see ``_handoff``).
    ``pending``: rows of the run that no worker has started yet (see ``engine._runner``).
    """
    valid = np.zeros(len(values), dtype=bool)
    texts: list[str] = []
    text_labels: list = []
    nulls = invalid = 0
    for i, value in enumerate(values):
        if isinstance(value, str):
            if value.strip():
                valid[i] = True
                texts.append(prefix + value)
                text_labels.append(labels[i])
            else:
                nulls += 1
        elif value is None or (isinstance(value, float) and math.isnan(value)) or _is_na(value):
            nulls += 1
        elif on_invalid == "null":
            invalid += 1
        elif on_invalid == "record":  # the router records it as a row error
            valid[i] = True
            texts.append(value)
            text_labels.append(labels[i])
        else:
            where = f"partition {partition}, row {labels[i]!r}" if partition is not None \
                else f"row {labels[i]!r}"
            raise InputError(
                f"{where}: value is {type(value).__name__} ({value!r:.40}), not text: convert "
                "the column to strings, or pass on_invalid='null' to embed it as null",
                row=labels[i], partition=partition,
            )
    matrix = np.zeros((len(values), dim), np.float32)
    if on_rows is not None and nulls + invalid:
        on_rows(nulls + invalid)
    if not texts:
        return PartitionVectors(matrix, valid, nulls, invalid,
                                truncated=np.zeros(len(values), bool) if find_truncated else None,
                                n_tokens=np.full(len(values), -1, np.int64) if count_tokens
                                else None)
    result = router.embed_rows(texts, row_ids=text_labels, record=on_invalid == "record",
                               on_rows=on_rows, find_truncated=find_truncated,
                               handed_out=handed_out, pending=pending)
    sent = np.flatnonzero(valid)  # the rows of ``texts``, before row errors clear some
    matrix[valid] = result.matrix
    truncated = None
    if result.truncated is not None:
        truncated = np.zeros(len(values), bool)
        truncated[valid] = result.truncated
    if result.errors:
        positions = np.flatnonzero(valid)
        valid[positions[list(result.errors)]] = False
    n_tokens = None
    if count_tokens:  # as sent (prefix included); -1 where no node could count
        n_tokens = np.full(len(values), -1, np.int64)
        kept = [p for p, row in enumerate(sent) if valid[row]]  # texts with a vector
        counts = router.count_tokens([texts[p] for p in kept])
        n_tokens[sent[kept]] = [-1 if n is None else n for n in counts]
    return PartitionVectors(matrix, valid, nulls, invalid, list(result.errors.values()),
                            result.tokens, truncated, n_tokens)


def column_values(column: pa.ChunkedArray) -> list:
    """A column's values as Python objects. A string column holding bytes that are not
    UTF-8 (parquet does not check) does not convert as a whole: its values are then
    decoded one by one, the bad bytes kept as lone surrogates, so that only those rows
    are refused (as invalid Unicode) instead of the whole part."""
    try:
        return column.to_pylist()
    except UnicodeDecodeError:
        raw = column.cast(pa.large_binary() if pa.types.is_large_string(column.type)
                          else pa.binary())
        return [None if b is None else b.decode("utf-8", "surrogateescape")
                for b in raw.to_pylist()]


def _is_na(value: object) -> bool:
    try:
        import pandas as pd

        return value is pd.NA or value is pd.NaT or (isinstance(value, np.floating) and np.isnan(value))
    except (TypeError, ValueError):
        return False


def arrow_vectors(part: PartitionVectors) -> pa.FixedSizeListArray:
    """``fixed_size_list<float32>[dim]`` with nulls where the text was missing."""
    rows, dim = part.matrix.shape
    return pa.FixedSizeListArray.from_arrays(
        pa.array(part.matrix.reshape(-1)), dim, mask=pa.array(~part.valid))


def vector_type(dim: int) -> pa.DataType:
    return pa.list_(pa.float32(), dim)
