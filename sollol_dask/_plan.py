"""Which parts a parquet run writes, and the manifest that lets a rerun resume.

Inputs are split along row groups into parts of about ``rows_per_part`` rows (a row group
much larger than that is sliced), so each task is seconds of work and scheduler overhead
stays under 1%. The plan is deterministic: the same inputs and settings give the same
parts with the same names, which is what makes "skip the parts that exist" correct.
"""

from __future__ import annotations

import dataclasses
import json

import fsspec
import pyarrow.parquet as pq

from ._exceptions import ConfigurationError, OutputError

MANIFEST = "_sollol_manifest.json"
FORMAT = 1


@dataclasses.dataclass(frozen=True)
class PartSpec:
    index: int
    file: str
    row_groups: tuple[int, ...]
    start: int  # first row within the concatenated row groups
    stop: int
    file_row: int  # row number of ``start`` within the whole input file (for errors)

    @property
    def name(self) -> str:
        return f"part-{self.index:05d}.parquet"

    @property
    def rows(self) -> int:
        return self.stop - self.start


def list_inputs(src: str) -> tuple[fsspec.AbstractFileSystem, list[str]]:
    """Parquet files of ``src``: a file, a directory (recursively) or a glob."""
    fs, path = fsspec.core.url_to_fs(str(src))
    if any(ch in path for ch in "*?["):
        paths = sorted(fs.glob(path))
    elif fs.isdir(path):
        paths = sorted(p for p in fs.find(path) if p.endswith((".parquet", ".parq"))
                       and not p.rsplit("/", 1)[-1].startswith(("_", ".")))
    elif fs.exists(path):
        paths = [path]
    else:
        raise ConfigurationError(f"input {src!r} does not exist")
    if not paths:
        raise ConfigurationError(f"no parquet files found in {src!r}")
    return fs, paths


def plan_parts(fs, paths: list[str], column: str, output_column: str,
               rows_per_part: int) -> tuple[list[PartSpec], list[dict]]:
    """The parts to write and a description of the inputs (for the manifest)."""
    if rows_per_part < 1:
        raise ConfigurationError("rows_per_part must be >= 1")
    parts: list[PartSpec] = []
    inputs: list[dict] = []
    for path in paths:
        with fs.open(path, "rb") as handle:
            meta = pq.ParquetFile(handle).metadata
            schema = meta.schema.to_arrow_schema()
        if column not in schema.names:
            raise ConfigurationError(
                f"column {column!r} is not in {path} (its columns: {', '.join(schema.names)}): "
                "pass --column / column= with the text column's name")
        if output_column in schema.names:
            raise ConfigurationError(
                f"{path} already has a column {output_column!r}: choose another output_column")
        inputs.append({"path": path, "size": fs.size(path), "rows": meta.num_rows})
        groups: list[int] = []
        group_rows = 0
        file_row = 0
        for g in range(meta.num_row_groups):
            n = meta.row_group(g).num_rows
            if n > 2 * rows_per_part:  # slice a huge row group on its own
                if groups:
                    parts.append(PartSpec(len(parts), path, tuple(groups), 0, group_rows,
                                          file_row - group_rows))
                    groups, group_rows = [], 0
                for start in range(0, n, rows_per_part):
                    stop = min(n, start + rows_per_part)
                    parts.append(PartSpec(len(parts), path, (g,), start, stop, file_row + start))
                file_row += n
                continue
            groups.append(g)
            group_rows += n
            file_row += n
            if group_rows >= rows_per_part:
                parts.append(PartSpec(len(parts), path, tuple(groups), 0, group_rows,
                                      file_row - group_rows))
                groups, group_rows = [], 0
        if groups:
            parts.append(PartSpec(len(parts), path, tuple(groups), 0, group_rows,
                                  file_row - group_rows))
    return parts, inputs


def manifest_for(parts: list[PartSpec], inputs: list[dict], identity: dict) -> dict:
    return {"format": FORMAT, **identity, "inputs": inputs,
            "parts": [dataclasses.asdict(p) | {"name": p.name} for p in parts]}


def check_or_write_manifest(fs, dst: str, manifest: dict, overwrite: bool) -> None:
    """Refuse to mix outputs of different runs; start over when ``overwrite``."""
    path = f"{dst}/{MANIFEST}"
    if fs.exists(path) and not overwrite:
        with fs.open(path, "rb") as handle:
            old = json.load(handle)
        for key in ("model", "digest", "dimension", "options", "column", "output_column",
                    "on_invalid", "rows_per_part", "inputs"):
            if old.get(key) != manifest.get(key):
                raise OutputError(
                    f"{dst} holds output of another run ({key} was {_short(old.get(key))}, now "
                    f"{_short(manifest.get(key))}): pass overwrite=True (--overwrite) to start "
                    "over, or choose another output directory")
        return
    try:
        if overwrite and fs.exists(dst):
            for old_part in fs.glob(f"{dst}/part-*.parquet") + fs.glob(f"{dst}/.part-*"):
                fs.rm(old_part)
        fs.makedirs(dst, exist_ok=True)
        tmp = f"{dst}/.{MANIFEST}.tmp"
        with fs.open(tmp, "wb") as handle:
            handle.write(json.dumps(manifest, indent=1).encode())
        fs.mv(tmp, path)
    except OSError as exc:
        raise OutputError(f"cannot write to {dst}: {exc}. Choose a writable output "
                          "directory") from exc


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) < 80 else text[:77] + "..."
