"""A batch function users hand to a framework themselves: ``ddf.map_partitions(fn)``,
Ray Data's ``ds.map_batches(fn, batch_format="pandas" | "pyarrow")``, or a plain loop.

It is a small picklable object (settings and column names only); each process that calls
it embeds through its own router (the WorkerPlugin's on a Dask worker, else one cached
per process), so a fleet's connection pools are built once per worker, not per batch.
"""

from __future__ import annotations

import dataclasses

import pandas as pd
import pyarrow as pa

from .._settings import RouterSettings
from ._partition import arrow_vectors, check_on_invalid, embed_values, vector_type
from ._plugin import router_for


@dataclasses.dataclass(frozen=True)
class BatchEmbedder:
    """``fn(batch)``: ``batch`` (a pandas DataFrame or a pyarrow Table) with
    ``output_column`` added, ``fixed_size_list<float32>[dim]``, null where the text is
    missing; the same type back. Rows are named by their index (pandas) or position."""

    settings: RouterSettings
    column: str
    output_column: str
    dimension: int
    on_invalid: str = "raise"
    prefix: str = ""

    def __post_init__(self) -> None:
        check_on_invalid(self.on_invalid)

    def __call__(self, batch):
        if not isinstance(batch, (pa.Table, pd.DataFrame)):
            raise TypeError(f"a batch must be a pandas DataFrame or a pyarrow Table, not "
                            f"{type(batch).__name__} (Ray Data: map_batches(fn, "
                            "batch_format='pandas'))")
        names = list(batch.column_names if isinstance(batch, pa.Table) else batch.columns)
        if self.column not in names:
            raise KeyError(f"column {self.column!r} is not in the batch (columns: {names}): "
                           "pass batch_function(column=...)")
        if isinstance(batch, pa.Table):
            values = batch.column(self.column).to_pylist()
            part = self._embed(values, list(range(len(values))))
            return batch.append_column(pa.field(self.output_column, vector_type(self.dimension)),
                                       arrow_vectors(part))
        part = self._embed(batch[self.column].tolist(), batch.index.tolist())
        column = pd.arrays.ArrowExtensionArray(arrow_vectors(part))
        return batch.assign(**{self.output_column: pd.Series(column, index=batch.index)})

    def _embed(self, values: list, labels: list):
        return embed_values(router_for(self.settings), values, labels, self.dimension,
                            on_invalid=self.on_invalid, prefix=self.prefix)
