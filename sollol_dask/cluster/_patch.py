"""``--retry-errors``: embed again only the rows a committed part lists in ``_errors``.

A part whose commit record counts row errors is read back from the output (it keeps
every input column, the text included), the listed rows are embedded, their vectors put
in place, and the part, its error file (the rows that fail again) and its record are
committed again as one, like a new part. The other rows are not sent anywhere.
"""

from __future__ import annotations

from collections import Counter

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from distributed.metrics import context_meter

from .._exceptions import OutputError
from ._commit import commit_part
from ._errors import errors_table, read_errors
from ._partition import column_values, embed_values
from ._plan import PartSpec
from ._plugin import router_for
from .._settings import RouterSettings


def patch_part(spec: PartSpec, record: dict, *, settings: RouterSettings, out_path: str,
               column: str, output_column: str, dim: int, on_invalid: str, job: str,
               prefix: str = "") -> dict:
    """Re-embed the rows listed in the part's error file; commit the patched part."""
    out_fs, _ = fsspec.core.url_to_fs(out_path)
    listed = read_errors(out_fs, out_path, spec.name)
    with context_meter.meter("sollol-read"), out_fs.open(f"{out_path}/{spec.name}", "rb") as f:
        table = pq.read_table(f)
    rows = np.asarray(listed.column("row").to_pylist(), np.int64) - spec.file_row
    if len(rows) and (rows.min() < 0 or rows.max() >= table.num_rows):
        raise OutputError(f"{out_path}/_errors/{spec.name} lists rows outside {spec.name}: "
                          "it does not belong to this output; rerun with --overwrite")
    values = column_values(table.column(column).take(pa.array(rows)))
    with context_meter.meter("sollol-embed"):
        part = embed_values(router_for(settings), values, (rows + spec.file_row).tolist(), dim,
                            partition=f"{spec.name} ({spec.file}, retried rows)",
                            on_invalid=on_invalid, prefix=prefix)
    vectors = table.column(output_column).combine_chunks()
    matrix = vectors.values.to_numpy(zero_copy_only=False).reshape(-1, dim)[
        vectors.offset:vectors.offset + len(vectors)].copy()
    valid = vectors.is_valid().to_numpy(zero_copy_only=False).copy()
    matrix[rows] = part.matrix
    valid[rows] = part.valid
    column_at = table.schema.get_field_index(output_column)
    table = table.set_column(column_at, table.schema.field(column_at),
                             pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), dim,
                                                               mask=pa.array(~valid)))
    errors = errors_table(part.errors, spec.file, spec.name)
    commit_part(table, errors, spec, out_path, job, record.get("source_sha256"))
    return {"name": spec.name, "rows": 0, "embedded": int(part.valid.sum()),
            "null_rows": 0, "invalid_rows": part.invalid_rows, "retried": len(rows),
            "row_errors": dict(Counter(e.reason for e in part.errors)), "tokens": part.tokens}
