"""Committing a part: its file, its row errors and its commit record, so that the part
exists whole or not at all (see ``_manifest`` for the order and why)."""

from __future__ import annotations

import contextlib
import hashlib
import uuid

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from distributed import get_worker
from distributed.metrics import context_meter

from .._exceptions import OutputError
from ._errors import write_errors
from ._manifest import write_record
from ._plan import PartSpec
from ._plugin import JOBS_TOPIC


def commit_part(table: pa.Table, errors: pa.Table, spec: PartSpec, out_path: str, job: str,
                source_sha256: str | None) -> None:
    """Write a part's file and its row errors so that the part exists whole or not at all."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    data = sink.getvalue()
    record = {"rows": spec.rows, "size": data.size, "sha256": hashlib.sha256(data).hexdigest(),
              "source_sha256": source_sha256, "run": job, "row_errors": errors.num_rows}
    out_fs, _ = fsspec.core.url_to_fs(out_path)
    final = f"{out_path}/{spec.name}"
    tmp = f"{out_path}/.{spec.name}.{job}-{uuid.uuid4().hex[:8]}.tmp"  # this run's own name
    try:
        with context_meter.meter("sollol-write"):
            with out_fs.open(tmp, "wb") as handle:
                handle.write(data)
            # The row errors, then the record, then the part: a part in place always has
            # both; a record alone (killed before the rename) only means recompute.
            write_errors(out_fs, out_path, spec.name, errors, job)
            write_record(out_fs, out_path, spec.name, record, job)
            out_fs.mv(tmp, final)  # atomic rename: the part exists whole or not at all
    except OSError as exc:
        with contextlib.suppress(OSError):
            out_fs.rm(tmp)
        raise OutputError(f"cannot write {final}: {exc}. Free space or fix permissions, then "
                          "rerun: finished parts are kept") from exc
    with contextlib.suppress(ValueError):  # ValueError: not on a Dask worker
        get_worker().log_event(JOBS_TOPIC, {"kind": "part", "job": job, "rows": spec.rows,
                                            "row_errors": errors.num_rows})
