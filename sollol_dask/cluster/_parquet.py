"""``embed_parquet``: parquet corpus in, parquet with an embedding column out, resumably.

Each part of the plan (see ``_plan``) is one Dask task: read its rows, embed the text
column through the worker's router, append ``fixed_size_list<float32>[dim]``, write to a
temporary name of this run, record the part's size and sha256, and rename, so a part
file exists whole or not at all. The run holds the output's lock throughout
(``_ownership``); a rerun keeps only the parts that verify (``_resume``).
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import fsspec
from distributed.metrics import context_meter
import pyarrow as pa
import pyarrow.parquet as pq

from ._clients import client_for_run, current_client
from .._exceptions import InputError, OutputError
from ._fingerprint import UnreadableParquet, chunk_digest, footer_digest
from ._handoff import leave_pool_when_sent
from ._hive import partition_columns, partition_values
from ..policy._identity import Reference
from ._commit import commit_part
from ._errors import errors_table
from ._manifest import fold_records, manifest_for, read_records
from ._ownership import RunLock, check_disjoint
from ._patch import patch_part
from ._partition import arrow_vectors, check_on_invalid, column_values, embed_values, vector_type
from ._plan import PartSpec, list_inputs, plan_parts
from ._plugin import JOBS_TOPIC, existing_router, register, router_for
from ._progress import TaskRows, rows_topic, wait_for
from .._report import EmbedReport, merge_node_states
from ._resume import METADATA_KEY, prepare_output
from ._truncation import check_new_column, check_truncated_column, tokens_array
from .._settings import RouterSettings


def run_embed_parquet(settings: RouterSettings, reference: Reference, src: str, dst: str, *,
                      column: str, output_column: str = "embedding", client=None,
                      overwrite: bool = False, rows_per_part: int = 4096, progress: bool = False,
                      on_invalid: str = "raise", prefix: str = "", retry_errors: bool = False,
                      truncated_column: str | None = None, n_tokens_column: str | None = None,
                      install: Callable[[Any], object] | None = None) -> EmbedReport:
    """``install(client)`` puts what the run needs on the cluster it runs on (the
    facade's: worker plugin, slot broker, fleet monitor); default: ``register``.
    ``retry_errors``: also embed again the rows committed parts list in ``_errors``."""
    check_on_invalid(on_invalid)
    started = time.perf_counter()
    in_fs, paths = list_inputs(src)
    check_disjoint(src, dst, paths)
    if truncated_column is not None:
        check_truncated_column(settings, in_fs, paths, truncated_column, output_column)
    if n_tokens_column is not None:
        check_new_column(in_fs, paths, "n_tokens_column", n_tokens_column, output_column,
                         *filter(None, [truncated_column]))
    parts, inputs = plan_parts(in_fs, paths, column, output_column, rows_per_part,
                               partition_values(in_fs, src, paths))
    out_fs, out_path = fsspec.core.url_to_fs(str(dst))
    opts = settings.opts
    identity = {
        "model": opts.model, "digest": reference.digest, "dimension": reference.dimension,
        "options": {"truncate": opts.truncate, "dimensions": opts.dimensions,
                    "options": opts.options,
                    # windows pooled: other vectors than a run that truncates or rejects
                    **({"length_policy": "chunk", "context_length": settings.context_length}
                       if settings.length_policy == "chunk" else {})},
        "column": column, "output_column": output_column, "on_invalid": on_invalid,
        "rows_per_part": rows_per_part, "normalized": reference.normalized,
        "prefix": prefix or None,  # it changes the vectors: another prefix is another run
        # another output schema: a flag column of the rows the server cut (truncate policy)
        **({"truncated_column": truncated_column} if truncated_column else {}),
        **({"n_tokens_column": n_tokens_column} if n_tokens_column else {}),
    }
    manifest = manifest_for(parts, inputs, identity)
    token = uuid.uuid4().hex[:8]  # names this run's job, tasks and temporary files
    try:
        out_fs.makedirs(out_path, exist_ok=True)
        lock = RunLock.acquire(out_fs, out_path, token)
    except OSError as exc:
        raise OutputError(f"cannot write to {dst}: {exc}. Choose a writable output "
                          "directory") from exc
    with lock:
        try:
            prepared = prepare_output(out_fs, out_path, parts, manifest, overwrite=overwrite,
                                      token=token, in_fs=in_fs)
        except OSError as exc:
            raise OutputError(f"cannot prepare {dst} for the run: {exc}. Fix its permissions, "
                              "then rerun") from exc
        retry = [p for p in parts if retry_errors
                 and (prepared.committed.get(p.name) or {}).get("row_errors")]
        node_tokens: dict[str, int] = {}
        try:
            done_before = sum(p.rows for p in parts) - sum(p.rows for p in prepared.todo)
            results, failures, per_node, nodes, dashboard = _compute(
                prepared.todo, inputs, settings, reference, identity, str(dst), out_path, token,
                client, progress, install, done_before,
                retry=[(p, prepared.committed[p.name]) for p in retry], node_tokens=node_tokens)
        finally:  # also on failure or Ctrl-C: what was committed is kept in the manifest
            fold_records(out_fs, out_path, manifest,
                         {**prepared.committed, **read_records(out_fs, out_path)}, token)
    todo, skipped = prepared.todo, len(prepared.committed) - len(retry)
    if failures:
        spec, error = failures[0]
        error.add_note(
            f"{len(failures)} of {len(todo)} parts failed (first: {spec.name} from {spec.file}); "
            f"{len(results)} parts were written and {skipped} existed: rerun to "
            "resume, only the missing parts are computed")
        raise error
    return EmbedReport(
        output=str(dst), model=opts.model, dimension=reference.dimension,
        rows=sum(p.rows for p in parts), rows_written=sum(r["rows"] for r in results),
        embedded=sum(r["embedded"] for r in results),
        null_rows=sum(r["null_rows"] for r in results),
        invalid_rows=sum(r["invalid_rows"] for r in results),
        parts_written=len(results), parts_skipped=skipped,
        seconds=time.perf_counter() - started, per_node=per_node, dashboard=dashboard,
        parts_recomputed=len(prepared.recomputed), node_states=nodes,
        row_errors=dict(sum((Counter(r.get("row_errors", {})) for r in results), Counter())),
        rows_retried=sum(r.get("retried", 0) for r in results),
        tokens=sum(r.get("tokens", 0) for r in results),
        per_node_tokens=node_tokens,
    )


def _compute(todo: list[PartSpec], inputs: list[dict], settings: RouterSettings,
             reference: Reference, identity: dict, output: str, out_path: str, token: str,
             client, progress: bool, install: Callable[[Any], object] | None = None,
             done_before: int = 0, retry: list[tuple[PartSpec, dict]] = (),
             node_tokens: dict | None = None,
             ) -> tuple[list[dict], list, dict[str, int], dict[str, dict], str | None]:
    """Run one task per part on the cluster: (results, failures, texts per node, node
    states, dashboard).
    ``done_before``: rows of the parts kept from earlier runs (where progress starts);
    ``retry``: committed parts whose listed row errors are embedded again; ``node_tokens``
    is filled with the tokens each node reported during the run."""
    footers = {i["path"]: i["footer_sha256"] for i in inputs}
    schema_meta = json.dumps({k: identity[k] for k in ("model", "digest", "dimension",
                                                       "normalized", "prefix")}).encode()
    results: list[dict] = []
    failures: list = []
    own_cluster = client is None and current_client() is None
    with client_for_run(client) as run_client:
        if install is not None:
            install(run_client)
        else:
            register(run_client, settings)
        before = _fleet_rows(run_client, settings)
        run_client.log_event(JOBS_TOPIC, {"kind": "start", "job": token, "output": output,
                                          "rows": sum(p.rows for p in todo), "parts": len(todo)})
        topic = rows_topic(token) if progress else None
        futures = run_client.map(
            _write_part, todo, [footers[p.file] for p in todo],
            pending_rows(todo, sum(run_client.nthreads().values())),
            key=[f"sollol-embed-part-{token}-{p.index}" for p in todo],
            settings=settings, out_path=out_path, column=identity["column"],
            output_column=identity["output_column"], dim=reference.dimension,
            schema_meta=schema_meta, on_invalid=identity["on_invalid"], job=token,
            progress_topic=topic, prefix=identity["prefix"] or "",
            truncated_column=identity.get("truncated_column"),
            n_tokens_column=identity.get("n_tokens_column"), pure=False)
        if retry:
            futures += run_client.map(
                patch_part, [s for s, _ in retry], [r for _, r in retry],
                key=[f"sollol-retry-part-{token}-{s.index}" for s, _ in retry],
                settings=settings, out_path=out_path, column=identity["column"],
                output_column=identity["output_column"], dim=reference.dimension,
                on_invalid=identity["on_invalid"], job=token,
                prefix=identity["prefix"] or "", pure=False)
            todo = [*todo, *(s for s, _ in retry)]
        try:
            wait_for(run_client, futures, [p.index for p in todo], [p.rows for p in todo],
                     topic=topic, total=done_before + sum(p.rows for p in todo),
                     initial=done_before)
        except BaseException:
            run_client.cancel(futures)  # parts already renamed into place stay
            raise
        for spec, future in zip(todo, futures):
            if future.status == "finished":
                results.append(future.result())
            else:
                failures.append((spec, future.exception()))
        after = _fleet_rows(run_client, settings)
        per_node = _diff(_node_texts(after), _node_texts(before))
        if node_tokens is not None:
            node_tokens.update((n, t) for n, t in _diff(_node_tokens(after),
                                                        _node_tokens(before)).items() if t)
        nodes = _node_states(after, before)
        # A LocalCluster started for the run is gone when the report is read: no link.
        dashboard = None if own_cluster else getattr(run_client, "dashboard_link", None)
    return results, failures, per_node, nodes, dashboard


def pending_rows(parts: list[PartSpec], threads: int) -> list[int]:
    """For each part (in the order the scheduler starts them), the rows of the parts
    that will not have started while it is sent: those ``threads`` or more places after
    it (the cluster sends one part per thread). Its last batches are cut short for the
    run's tail only when this is small; 0 for the last parts, where the tail is."""
    after = [0] * len(parts)  # rows of the parts after each one
    total = 0
    for k in range(len(parts) - 1, -1, -1):
        after[k] = total
        total += parts[k].rows
    return [after[k + threads - 1] if k + threads - 1 < len(parts) else 0
            for k in range(len(parts))]


def _write_part(spec: PartSpec, footer_sha256: str, pending: int | None = None, *,
                settings: RouterSettings, out_path: str,
                column: str, output_column: str, dim: int, schema_meta: bytes, on_invalid: str,
                job: str, progress_topic: str | None = None, prefix: str = "",
                truncated_column: str | None = None,
                n_tokens_column: str | None = None) -> dict:
    in_fs, in_path = fsspec.core.url_to_fs(spec.file)
    with context_meter.meter("sollol-read"), in_fs.open(in_path, "rb") as handle:
        try:
            changed = footer_digest(handle, in_fs.size(in_path)) != footer_sha256
        except UnreadableParquet:
            changed = True
        if changed:  # the plan was made from another version of the file
            raise InputError(f"input {spec.file} changed while the run was under way: rerun "
                             "once it is final (with overwrite=True, --overwrite, if parts were "
                             "written)", partition=spec.name)
        source = pq.ParquetFile(handle)
        table = source.read_row_groups(list(spec.row_groups))
        # What the rows were read from: a rerun compares it if the input's time moves.
        source_sha256 = chunk_digest(handle, source.metadata, spec.row_groups)
    table = table.slice(spec.start, spec.rows)
    for field, values in partition_columns(spec.partition, spec.rows):  # from lang=en/ dirs
        table = table.append_column(field, values)
    labels = range(spec.file_row, spec.file_row + spec.rows)
    with context_meter.meter("sollol-embed"):  # waiting on the nodes, parsing, checking
        part = embed_values(router_for(settings), column_values(table.column(column)), labels,
                            dim, partition=f"{spec.name} ({spec.file}, rows {spec.file_row}..)",
                            on_invalid=on_invalid, prefix=prefix,
                            on_rows=TaskRows(progress_topic, spec.index) if progress_topic else None,
                            find_truncated=truncated_column is not None,
                            count_tokens=n_tokens_column is not None,
                            handed_out=leave_pool_when_sent(), pending=pending)
    table = table.append_column(pa.field(output_column, vector_type(dim)), arrow_vectors(part))
    if truncated_column is not None:
        table = table.append_column(truncated_column, pa.array(part.truncated, pa.bool_()))
    if n_tokens_column is not None:
        table = table.append_column(n_tokens_column, tokens_array(part.n_tokens))
    metadata = dict(table.schema.metadata or {})
    metadata[METADATA_KEY] = schema_meta
    table = table.replace_schema_metadata(metadata)
    errors = errors_table(part.errors, spec.file, spec.name)
    commit_part(table, errors, spec, out_path, job, source_sha256)
    return {"name": spec.name, "rows": spec.rows, "embedded": int(part.valid.sum()),
            "null_rows": part.null_rows, "invalid_rows": part.invalid_rows,
            "row_errors": dict(Counter(e.reason for e in part.errors)), "tokens": part.tokens}


def _fleet_rows(client, settings: RouterSettings) -> list[list[dict]]:
    """Every worker router's per-node snapshot (state, reason, texts, errors so far)."""
    return list(client.run(_worker_rows, settings).values())


def _worker_rows(settings: RouterSettings, dask_worker=None) -> list[dict]:
    router = existing_router(settings, dask_worker)
    return [] if router is None else [
        {k: s[k] for k in ("node", "state", "reason", "texts", "errors", "overtaken", "tokens")}
        for s in router.snapshot()]


def _node_texts(snapshots: list[list[dict]]) -> Counter:
    totals: Counter = Counter()
    for rows in snapshots:
        totals.update({row["node"]: row["texts"] for row in rows})
    return totals


def _node_tokens(snapshots: list[list[dict]]) -> Counter:
    """Tokens the nodes reported so far, summed over every worker's router."""
    totals: Counter = Counter()
    for rows in snapshots:
        totals.update({row["node"]: row["tokens"] for row in rows})
    return totals


def _diff(after: Counter, before: Counter) -> dict[str, int]:
    return {node: after[node] - before.get(node, 0) for node in after}


def _node_states(after: list[list[dict]], before: list[list[dict]]) -> dict[str, dict]:
    """Each node's state at the end of the run, with only this run's errors counted."""
    states = merge_node_states(after)
    for node, info in merge_node_states(before).items():
        if node in states:
            errors = states[node]["errors"]
            for kind, count in info["errors"].items():
                errors[kind] = errors.get(kind, 0) - count
            states[node]["overtaken"] -= info["overtaken"]
    return states
