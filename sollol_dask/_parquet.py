"""``embed_parquet``: parquet corpus in, parquet with an embedding column out, resumably.

Each part of the plan (see ``_plan``) is one Dask task: read its rows, embed the text
column through the worker's router, append ``fixed_size_list<float32>[dim]``, write to a
hidden temporary name and rename, so a part file exists whole or not at all. A rerun
skips the parts that exist.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter

import distributed
import fsspec
from distributed import get_worker
from distributed.metrics import context_meter
import pyarrow as pa
import pyarrow.parquet as pq

from ._clients import client_for_run
from ._exceptions import OutputError
from ._fleet import Reference
from ._partition import arrow_vectors, check_on_invalid, embed_values, vector_type
from ._plan import PartSpec, check_or_write_manifest, list_inputs, manifest_for, plan_parts
from ._plugin import existing_router, register, router_for
from ._report import EmbedReport
from ._settings import RouterSettings
from .dashboard import JOBS_TOPIC

METADATA_KEY = b"sollol_dask"


def run_embed_parquet(settings: RouterSettings, reference: Reference, src: str, dst: str, *,
                      column: str, output_column: str = "embedding", client=None,
                      overwrite: bool = False, rows_per_part: int = 4096, progress: bool = False,
                      on_invalid: str = "raise") -> EmbedReport:
    check_on_invalid(on_invalid)
    started = time.perf_counter()
    in_fs, paths = list_inputs(src)
    parts, inputs = plan_parts(in_fs, paths, column, output_column, rows_per_part)
    out_fs, out_path = fsspec.core.url_to_fs(str(dst))
    opts = settings.opts
    identity = {
        "model": opts.model, "digest": reference.digest, "dimension": reference.dimension,
        "options": {"truncate": opts.truncate, "dimensions": opts.dimensions,
                    "options": opts.options},
        "column": column, "output_column": output_column, "on_invalid": on_invalid,
        "rows_per_part": rows_per_part, "normalized": reference.normalized,
    }
    check_or_write_manifest(out_fs, out_path, manifest_for(parts, inputs, identity), overwrite)
    for stale in out_fs.glob(f"{out_path}/.part-*.tmp"):  # left by a killed run
        out_fs.rm(stale)
    done = set(out_fs.glob(f"{out_path}/part-*.parquet"))
    todo = [p for p in parts if f"{out_path}/{p.name}" not in done]
    schema_meta = json.dumps({k: identity[k] for k in ("model", "digest", "dimension",
                                                       "normalized")}).encode()
    results: list[dict] = []
    with client_for_run(client) as run_client:
        register(run_client, settings)
        before = _node_texts(run_client, settings)
        token = uuid.uuid4().hex[:8]
        run_client.log_event(JOBS_TOPIC, {"kind": "start", "job": token, "output": str(dst),
                                          "rows": sum(p.rows for p in todo), "parts": len(todo)})
        futures = run_client.map(
            _write_part, todo, key=[f"sollol-embed-part-{token}-{p.index}" for p in todo],
            settings=settings, out_path=out_path, column=column, output_column=output_column,
            dim=reference.dimension, schema_meta=schema_meta, on_invalid=on_invalid,
            job=token, pure=False)
        try:
            if progress:
                distributed.progress(futures)
            distributed.wait(futures)
        except BaseException:
            run_client.cancel(futures)  # parts already renamed into place stay
            raise
        failures = []
        for spec, future in zip(todo, futures):
            if future.status == "finished":
                results.append(future.result())
            else:
                failures.append((spec, future.exception()))
        per_node = _diff(_node_texts(run_client, settings), before)
        dashboard = getattr(run_client, "dashboard_link", None)
    if failures:
        spec, error = failures[0]
        error.add_note(
            f"{len(failures)} of {len(todo)} parts failed (first: {spec.name} from {spec.file}); "
            f"{len(results)} parts were written and {len(parts) - len(todo)} existed: rerun to "
            "resume, only the missing parts are computed")
        raise error
    return EmbedReport(
        output=str(dst), model=opts.model, dimension=reference.dimension,
        rows=sum(p.rows for p in parts), rows_written=sum(r["rows"] for r in results),
        embedded=sum(r["embedded"] for r in results),
        null_rows=sum(r["null_rows"] for r in results),
        invalid_rows=sum(r["invalid_rows"] for r in results),
        parts_written=len(results), parts_skipped=len(parts) - len(todo),
        seconds=time.perf_counter() - started, per_node=per_node, dashboard=dashboard,
    )


def _write_part(spec: PartSpec, *, settings: RouterSettings, out_path: str, column: str,
                output_column: str, dim: int, schema_meta: bytes, on_invalid: str,
                job: str | None = None) -> dict:
    in_fs, in_path = fsspec.core.url_to_fs(spec.file)
    with context_meter.meter("sollol-read"), in_fs.open(in_path, "rb") as handle:
        table = pq.ParquetFile(handle).read_row_groups(list(spec.row_groups))
    table = table.slice(spec.start, spec.rows)
    labels = range(spec.file_row, spec.file_row + spec.rows)
    with context_meter.meter("sollol-embed"):  # waiting on the nodes, parsing, checking
        part = embed_values(router_for(settings), table.column(column).to_pylist(), labels,
                            dim, partition=f"{spec.name} ({spec.file}, rows {spec.file_row}..)",
                            on_invalid=on_invalid)
    table = table.append_column(pa.field(output_column, vector_type(dim)), arrow_vectors(part))
    metadata = dict(table.schema.metadata or {})
    metadata[METADATA_KEY] = schema_meta
    table = table.replace_schema_metadata(metadata)
    out_fs, _ = fsspec.core.url_to_fs(out_path)
    final = f"{out_path}/{spec.name}"
    tmp = f"{out_path}/.{spec.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with context_meter.meter("sollol-write"), out_fs.open(tmp, "wb") as handle:
            pq.write_table(table, handle)
        out_fs.mv(tmp, final)  # atomic rename: the part exists whole or not at all
    except OSError as exc:
        try:
            out_fs.rm(tmp)
        except OSError:
            pass
        raise OutputError(f"cannot write {final}: {exc}. Free space or fix permissions, then "
                          "rerun: finished parts are kept") from exc
    if job is not None:
        try:
            get_worker().log_event(JOBS_TOPIC, {"kind": "part", "job": job, "rows": spec.rows})
        except ValueError:  # not on a Dask worker
            pass
    return {"name": spec.name, "rows": spec.rows, "embedded": int(part.valid.sum()),
            "null_rows": part.null_rows, "invalid_rows": part.invalid_rows}


def _node_texts(client, settings: RouterSettings) -> Counter:
    """Texts embedded per node so far, summed over every worker's router."""
    totals: Counter = Counter()
    for stats in client.run(_worker_node_texts, settings).values():
        totals.update(stats)
    return totals


def _worker_node_texts(settings: RouterSettings, dask_worker=None) -> dict[str, int]:
    router = existing_router(settings, dask_worker)
    return {} if router is None else {s["node"]: s["texts"] for s in router.snapshot()}


def _diff(after: Counter, before: Counter) -> dict[str, int]:
    return {node: after[node] - before.get(node, 0) for node in after}
