"""Lazy embedding of dask collections: ``embed_dataframe`` and ``embed_bag``.

Each partition becomes one task that runs on a worker through that worker's router (from
the WorkerPlugin). ``meta`` is always given, so building the graph computes nothing and
sends no request; only the fleet's dimension is learned once, with one probe. Each
partition reports itself to the scheduler's monitor when done (the page's jobs list).
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from dask.base import tokenize
from distributed.metrics import context_meter

from ._handoff import leave_pool_when_sent
from ._partition import arrow_vectors, check_on_invalid, embed_values, vector_type
from ._plugin import new_job, report_part, router_for, task_partition
from ._progress import TaskRows
from .._settings import RouterSettings


def check_dataframe(ddf: object) -> None:
    """``TypeError`` saying what to pass, for what users pass instead of a dask DataFrame
    (instead of an AttributeError from deep inside dask)."""
    import dask.dataframe as dd

    if isinstance(ddf, dd.DataFrame):
        return
    if isinstance(ddf, dd.Series):
        raise TypeError("embed_dataframe takes a dask DataFrame, not a dask Series: pass "
                        "series.to_frame() (column= its name), or use embed_bag(series.to_bag())")
    if isinstance(ddf, pd.DataFrame):
        raise TypeError("embed_dataframe takes a dask DataFrame, not a pandas DataFrame: pass "
                        "dask.dataframe.from_pandas(df, npartitions=N), or for a small frame "
                        "emb.embed(df[column].tolist())")
    if isinstance(ddf, pd.Series):
        raise TypeError("embed_dataframe takes a dask DataFrame, not a pandas Series: pass "
                        "dask.dataframe.from_pandas(series.to_frame(), npartitions=N), or for "
                        "a few texts emb.embed(series.tolist())")
    raise TypeError(f"embed_dataframe takes a dask DataFrame, not {type(ddf).__name__}: "
                    "make one with dask.dataframe.read_parquet(...) or from_pandas(...)")


def check_bag(bag: object) -> None:
    """``TypeError`` saying what to pass, for what users pass instead of a dask Bag."""
    import dask.bag as db
    import dask.dataframe as dd

    if isinstance(bag, db.Bag):
        return
    if isinstance(bag, dd.Series):
        raise TypeError("embed_bag takes a dask Bag, not a dask Series: pass series.to_bag(), "
                        "or embed_dataframe(series.to_frame()) to keep it a dataframe")
    if isinstance(bag, (dd.DataFrame, pd.DataFrame)):
        raise TypeError("embed_bag takes a dask Bag of texts, not a dataframe: use "
                        "embed_dataframe(ddf, column=...) for a dask DataFrame")
    if isinstance(bag, (str, list, tuple, np.ndarray, pd.Series)):
        raise TypeError(f"embed_bag takes a dask Bag, not {type(bag).__name__}: pass "
                        "dask.bag.from_sequence(texts, npartitions=N), or for texts in memory "
                        "call emb.embed(texts)")
    raise TypeError(f"embed_bag takes a dask Bag, not {type(bag).__name__}: make one with "
                    "dask.bag.from_sequence(texts, npartitions=N)")


def embed_dataframe(settings: RouterSettings, ddf, column: str, dim: int, *,
                    output_column: str = "embedding", on_invalid: str = "raise",
                    prefix: str = ""):
    check_on_invalid(on_invalid)
    if column not in ddf.columns:
        raise KeyError(f"column {column!r} is not in the dataframe (columns: {list(ddf.columns)})")
    meta = ddf._meta.assign(**{output_column: pd.Series([], dtype=pd.ArrowDtype(vector_type(dim)))})
    job = new_job("embed_dataframe", f"embed_dataframe {column!r} -> {output_column!r}",
                  ddf.npartitions, unit="rows",
                  token=tokenize(ddf, settings.fingerprint(), column, output_column, on_invalid,
                                 prefix))
    return ddf.map_partitions(sollol_embed_partition, settings, column, output_column, dim,
                              on_invalid, job, prefix, stringified_values(ddf, column),
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
                           job=None, prefix="", stringified=None,
                           partition_info=None) -> pd.DataFrame:
    number = partition_info["number"] if partition_info else None
    started = time.perf_counter()
    labels = pdf.index.tolist()
    values = _original(pdf[column].tolist(), labels, stringified or {})
    with context_meter.meter("sollol-embed"):
        part = embed_values(router_for(settings), values, labels, dim, partition=number,
                            on_invalid=on_invalid, prefix=prefix,
                            handed_out=leave_pool_when_sent())
    report_part(job, number, len(pdf), time.perf_counter() - started)
    column_values = pd.arrays.ArrowExtensionArray(arrow_vectors(part))
    return pdf.assign(**{output_column: pd.Series(column_values, index=pdf.index)})


def embed_bag(settings: RouterSettings, bag, dim: int, *, on_invalid: str = "raise",
              prefix: str = ""):
    check_on_invalid(on_invalid)
    job = new_job("embed_bag", "embed_bag", bag.npartitions, unit="texts",
                  token=tokenize(bag, settings.fingerprint(), on_invalid, prefix))
    return bag.map_partitions(sollol_embed_bag_partition, settings, dim, on_invalid, job, prefix)


def sollol_embed_bag_partition(items, settings, dim, on_invalid, job=None, prefix="") -> list:
    items = list(items)
    number = task_partition()  # bags give no partition_info
    started = time.perf_counter()
    part = embed_values(router_for(settings), items, list(range(len(items))), dim,
                        partition=number, on_invalid=on_invalid, prefix=prefix,
                        handed_out=leave_pool_when_sent())
    report_part(job, number, len(items), time.perf_counter() - started)
    return [row.copy() if ok else None for row, ok in zip(part.matrix, part.valid)]


def embed_chunk(settings: RouterSettings, texts: list[str], offset: int,
                job: dict | None = None,
                progress_topic: str | None = None) -> np.ndarray:
    """One slice of a large ``Embedder.embed`` list, on a worker (labels stay global);
    with ``progress_topic``, its rows done go to the waiting client as they come."""
    started = time.perf_counter()
    on_rows = TaskRows(progress_topic, offset) if progress_topic else None
    vectors = router_for(settings).embed(texts, row_ids=range(offset, offset + len(texts)),
                                         on_rows=on_rows)
    report_part(job, offset, len(texts), time.perf_counter() - started)
    return vectors


def embed_job(texts: int, chunks: int) -> dict:
    """The page's entry for one distributed ``Embedder.embed`` call."""
    return new_job("embed", f"embed() of {texts} texts", chunks, unit="texts",
                   total_rows=texts)
