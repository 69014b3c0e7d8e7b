"""Lazy embedding of dask collections: ``embed_dataframe`` and ``embed_bag``.

Each partition becomes one task that runs on a worker through that worker's router (from
the WorkerPlugin). ``meta`` is always given, so building the graph computes nothing and
sends no request; only the fleet's dimension is learned once, with one probe.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from distributed.metrics import context_meter

from ._partition import arrow_vectors, check_on_invalid, embed_values, vector_type
from ._plugin import router_for
from .._settings import RouterSettings


def embed_dataframe(settings: RouterSettings, ddf, column: str, dim: int, *,
                    output_column: str = "embedding", on_invalid: str = "raise",
                    prefix: str = ""):
    check_on_invalid(on_invalid)
    if column not in ddf.columns:
        raise KeyError(f"column {column!r} is not in the dataframe (columns: {list(ddf.columns)})")
    meta = ddf._meta.assign(**{output_column: pd.Series([], dtype=pd.ArrowDtype(vector_type(dim)))})
    return ddf.map_partitions(sollol_embed_partition, settings, column, output_column, dim,
                              on_invalid, prefix, stringified_values(ddf, column),
                              meta=meta, enforce_metadata=False)


def stringified_values(ddf, column: str) -> dict:
    """Non-text values of ``column`` that Dask turned into text, by index label.

    ``dd.from_pandas`` converts object columns to pyarrow strings (Dask's
    ``dataframe.convert-string``), so a number 3 would reach the partition as "3" and be
    embedded as text. The pandas frame it holds still has the original values: they are
    found here, on the client, and put back in the partition (see ``_original``).
    """
    expr = getattr(ddf, "expr", None)
    found: dict = {}
    for node in expr.walk() if expr is not None else ():
        frame = getattr(node, "frame", None) if type(node).__name__ == "FromPandas" else None
        frame = getattr(frame, "_data", frame)  # dask wraps the pandas frame it holds
        if not getattr(node, "pyarrow_strings_enabled", False) or not isinstance(frame, pd.DataFrame) \
                or column not in frame.columns or frame[column].dtype != object:
            continue
        values = frame[column]
        odd = values.map(lambda v: not isinstance(v, str) and not _missing(v))
        found.update(values[odd.astype(bool)].items())
    return found


def _missing(value) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # a list or array: not a missing value
        return False


def _original(values: list, labels: list, stringified: dict) -> list:
    """``values`` with each text Dask made from a non-text value at its label replaced by
    that value again (checked by its text, so a relabelled frame changes nothing)."""
    if not stringified:
        return values
    out = list(values)
    for i, (value, label) in enumerate(zip(values, labels)):
        if label in stringified and isinstance(value, str) and value == str(stringified[label]):
            out[i] = stringified[label]
    return out


def sollol_embed_partition(pdf: pd.DataFrame, settings, column, output_column, dim, on_invalid,
                           prefix="", stringified=None, partition_info=None) -> pd.DataFrame:
    number = partition_info["number"] if partition_info else None
    labels = pdf.index.tolist()
    values = _original(pdf[column].tolist(), labels, stringified or {})
    with context_meter.meter("sollol-embed"):
        part = embed_values(router_for(settings), values, labels, dim, partition=number,
                            on_invalid=on_invalid, prefix=prefix)
    column_values = pd.arrays.ArrowExtensionArray(arrow_vectors(part))
    return pdf.assign(**{output_column: pd.Series(column_values, index=pdf.index)})


def embed_bag(settings: RouterSettings, bag, dim: int, *, on_invalid: str = "raise",
              prefix: str = ""):
    check_on_invalid(on_invalid)
    return bag.map_partitions(sollol_embed_bag_partition, settings, dim, on_invalid, prefix)


def sollol_embed_bag_partition(items, settings, dim, on_invalid, prefix="",
                               partition_info=None) -> list:
    items = list(items)
    number = partition_info["number"] if partition_info else None
    part = embed_values(router_for(settings), items, list(range(len(items))), dim,
                        partition=number, on_invalid=on_invalid, prefix=prefix)
    return [row.copy() if ok else None for row, ok in zip(part.matrix, part.valid)]


def embed_chunk(settings: RouterSettings, texts: list[str], offset: int) -> np.ndarray:
    """One slice of a large ``Embedder.embed`` list, on a worker (labels stay global)."""
    return router_for(settings).embed(texts, row_ids=range(offset, offset + len(texts)))
