"""Chunk rows of a dask DataFrame: one output row per window of each text, as the
``chunk`` length policy cuts it (``engine._chunking``), lazily, one task per partition
on the workers' routers. For corpora too large for ``Embedder.embed_chunks``'s list."""

from __future__ import annotations

import pandas as pd

from .._exceptions import ConfigurationError, InputError
from .._settings import RouterSettings
from ..engine._chunking import Chunks, chunk_table
from ._partition import vector_type
from ._plugin import router_for

CHUNK_COLUMNS = ("row", "chunk", "start", "end")


def check_chunk_policy(settings: RouterSettings) -> None:
    if settings.length_policy != "chunk":
        raise ConfigurationError(
            f"embed_chunks needs length_policy='chunk' (this Embedder's is "
            f"{settings.length_policy!r}): windows are sent with truncation off, so that a "
            "server never cuts one silently")


def chunk_dataframe(settings: RouterSettings, ddf, column: str, dim: int, prefix: str = ""):
    """A dask DataFrame of ``row`` (the source row's index label), ``chunk``, ``start``,
    ``end`` (character offsets in the text) and ``embedding``; missing texts give no row."""
    check_chunk_policy(settings)
    if column not in ddf.columns:
        raise KeyError(f"column {column!r} is not in the dataframe (columns: {list(ddf.columns)})")
    meta = pd.DataFrame({
        "row": pd.Series([], dtype=ddf._meta.index.dtype),
        "chunk": pd.Series([], dtype="int32"),
        "start": pd.Series([], dtype="int64"),
        "end": pd.Series([], dtype="int64"),
        "embedding": pd.Series([], dtype=pd.ArrowDtype(vector_type(dim))),
    })
    return ddf.map_partitions(sollol_chunk_partition, settings, column, dim, prefix, meta=meta,
                              enforce_metadata=False)


def sollol_chunk_partition(pdf: pd.DataFrame, settings: RouterSettings, column: str, dim: int,
                           prefix: str = "", partition_info=None) -> pd.DataFrame:
    number = partition_info["number"] if partition_info else None
    texts, ids = [], []
    for label, value in zip(pdf.index.tolist(), pdf[column].tolist()):
        if isinstance(value, str):
            if value.strip():
                texts.append(prefix + value)
                ids.append(label)
        elif not _missing(value):
            raise InputError(f"partition {number}, row {label!r}: value is "
                             f"{type(value).__name__} ({value!r:.40}), not text: convert the "
                             "column to strings", row=label, partition=number)
    chunks = router_for(settings).embed_chunks(texts, row_ids=ids) if texts else \
        Chunks([], [], _empty(dim), {}, 0)
    table = chunk_table(chunks)
    out = pd.DataFrame({name: table[name].to_numpy() for name in CHUNK_COLUMNS})
    out["row"] = pd.Series([ids[i] for i in out["row"]], dtype=pdf.index.dtype)
    out["embedding"] = pd.arrays.ArrowExtensionArray(table["embedding"].combine_chunks())
    return out


def _empty(dim: int):
    import numpy as np

    return np.empty((0, dim), np.float32)


def _missing(value) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False
