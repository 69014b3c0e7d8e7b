"""Row error files: ``dst/_errors/<part>`` lists the rows of a part that got no vector.

One small parquet file per part that has row errors, with the row's number in its input
file, the input file, the part, the reason (``_rows.REASONS``), a message for people and
the node that said so (empty when the row was refused before sending). Written before
the part's commit record, through a temporary name and a rename, like the part itself;
a part without row errors has no file (a stale one from an earlier run is removed).
``--retry-errors`` reads these files to embed just those rows again.
"""

from __future__ import annotations

import contextlib
import uuid

import pyarrow as pa
import pyarrow.parquet as pq

from .._rows import RowError

ERRORS_DIR = "_errors"
SCHEMA = pa.schema([("row", pa.int64()), ("file", pa.string()), ("part", pa.string()),
                    ("reason", pa.string()), ("message", pa.string()), ("node", pa.string())])


def errors_path(out_path: str, part: str) -> str:
    return f"{out_path}/{ERRORS_DIR}/{part}"


def errors_table(errors: list[RowError], file: str, part: str) -> pa.Table:
    rows = sorted(errors, key=lambda e: e.row)
    return pa.table({
        "row": pa.array([int(e.row) for e in rows], pa.int64()),
        "file": pa.array([file] * len(rows), pa.string()),
        "part": pa.array([part] * len(rows), pa.string()),
        "reason": pa.array([e.reason for e in rows], pa.string()),
        "message": pa.array([e.message for e in rows], pa.string()),
        "node": pa.array([e.node or "" for e in rows], pa.string()),
    }, schema=SCHEMA)


def write_errors(fs, out_path: str, part: str, table: pa.Table, job: str) -> None:
    """Replace the part's error file by ``table`` (or remove it when it has no rows).
    Raises OSError."""
    final = errors_path(out_path, part)
    if not table.num_rows:
        with contextlib.suppress(FileNotFoundError):
            if fs.exists(final):
                fs.rm(final)
        return
    fs.makedirs(f"{out_path}/{ERRORS_DIR}", exist_ok=True)
    tmp = f"{out_path}/{ERRORS_DIR}/.{part}.{job}-{uuid.uuid4().hex[:8]}.tmp"
    try:
        with fs.open(tmp, "wb") as handle:
            pq.write_table(table, handle)
        fs.mv(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            fs.rm(tmp)
        raise


def read_errors(fs, out_path: str, part: str) -> pa.Table:
    """The part's row errors (no rows if it has no file)."""
    path = errors_path(out_path, part)
    try:
        with fs.open(path, "rb") as handle:
            return pq.read_table(handle).cast(SCHEMA)
    except FileNotFoundError:
        return SCHEMA.empty_table()


def read_all_errors(fs, out_path: str) -> pa.Table:
    """Every row error listed in ``out_path/_errors``, ordered by part and row."""
    tables = [read_errors(fs, out_path, path.rstrip("/").rsplit("/", 1)[-1])
              for path in sorted(fs.glob(f"{out_path}/{ERRORS_DIR}/part-*"))]
    return pa.concat_tables([SCHEMA.empty_table(), *tables])
