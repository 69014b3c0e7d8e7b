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
from ._progress import TaskRows
from .._settings import RouterSettings


def embed_dataframe(settings: RouterSettings, ddf, column: str, dim: int, *,
                    output_column: str = "embedding", on_invalid: str = "raise"):
    check_on_invalid(on_invalid)
    if column not in ddf.columns:
        raise KeyError(f"column {column!r} is not in the dataframe (columns: {list(ddf.columns)})")
    meta = ddf._meta.assign(**{output_column: pd.Series([], dtype=pd.ArrowDtype(vector_type(dim)))})
    return ddf.map_partitions(sollol_embed_partition, settings, column, output_column, dim,
                              on_invalid, meta=meta, enforce_metadata=False)


def sollol_embed_partition(pdf: pd.DataFrame, settings, column, output_column, dim, on_invalid,
                           partition_info=None) -> pd.DataFrame:
    number = partition_info["number"] if partition_info else None
    with context_meter.meter("sollol-embed"):
        part = embed_values(router_for(settings), pdf[column].tolist(), pdf.index.tolist(),
                            dim, partition=number, on_invalid=on_invalid)
    column_values = pd.arrays.ArrowExtensionArray(arrow_vectors(part))
    return pdf.assign(**{output_column: pd.Series(column_values, index=pdf.index)})


def embed_bag(settings: RouterSettings, bag, dim: int, *, on_invalid: str = "raise"):
    check_on_invalid(on_invalid)
    return bag.map_partitions(sollol_embed_bag_partition, settings, dim, on_invalid)


def sollol_embed_bag_partition(items, settings, dim, on_invalid, partition_info=None) -> list:
    items = list(items)
    number = partition_info["number"] if partition_info else None
    part = embed_values(router_for(settings), items, list(range(len(items))), dim,
                        partition=number, on_invalid=on_invalid)
    return [row.copy() if ok else None for row, ok in zip(part.matrix, part.valid)]


def embed_chunk(settings: RouterSettings, texts: list[str], offset: int,
                progress_topic: str | None = None) -> np.ndarray:
    """One slice of a large ``Embedder.embed`` list, on a worker (labels stay global);
    with ``progress_topic``, its rows done go to the waiting client as they come."""
    on_rows = TaskRows(progress_topic, offset) if progress_topic else None
    return router_for(settings).embed(texts, row_ids=range(offset, offset + len(texts)),
                                      on_rows=on_rows)
