"""Which parts a parquet run writes.

Inputs are split along row groups into parts of about ``rows_per_part`` rows (a row group
much larger than that is sliced), so each task is seconds of work and scheduler overhead
stays under 1%. The plan is deterministic: the same inputs (by fingerprint, see
``_fingerprint``) and settings give the same parts with the same names, which is what
lets a rerun keep the parts that verify (see ``_resume``).
"""

from __future__ import annotations

import dataclasses
import functools

import fsspec

from .._exceptions import ConfigurationError
from ._fingerprint import fingerprint_input


@dataclasses.dataclass(frozen=True)
class PartSpec:
    index: int
    file: str
    row_groups: tuple[int, ...]
    start: int  # first row within the concatenated row groups
    stop: int
    file_row: int  # row number of ``start`` within the whole input file (for errors)
    # Hive partition columns of the file (``lang=en/``): (name, arrow type, value) each
    partition: tuple[tuple[str, str, object], ...] = ()

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
               rows_per_part: int, partitions: dict[str, tuple] | None = None,
               ) -> tuple[list[PartSpec], list[dict]]:
    """The parts to write and the inputs' fingerprints (for the manifest);
    ``partitions``: each file's Hive partition columns (``_hive``)."""
    if rows_per_part < 1:
        raise ConfigurationError("rows_per_part must be >= 1")
    parts: list[PartSpec] = []
    inputs: list[dict] = []
    for path in paths:
        meta, fingerprint = fingerprint_input(fs, path)  # InputError naming a broken file
        schema = meta.schema.to_arrow_schema()
        if column not in schema.names:
            raise ConfigurationError(
                f"column {column!r} is not in {path} (its columns: {', '.join(schema.names)}): "
                "pass --column / column= with the text column's name")
        if output_column in schema.names:
            raise ConfigurationError(
                f"{path} already has a column {output_column!r}: choose another output_column")
        inputs.append(fingerprint)
        hive = (partitions or {}).get(path, ())
        if output_column in {name for name, _, _ in hive}:
            raise ConfigurationError(
                f"{path} has a partition column {output_column!r} (its directory name): "
                "choose another output_column")
        new_part = functools.partial(PartSpec, partition=hive)
        groups: list[int] = []
        group_rows = 0
        file_row = 0
        for g in range(meta.num_row_groups):
            n = meta.row_group(g).num_rows
            if n > 2 * rows_per_part:  # slice a huge row group on its own
                if groups:
                    parts.append(new_part(len(parts), path, tuple(groups), 0, group_rows,
                                          file_row - group_rows))
                    groups, group_rows = [], 0
                for start in range(0, n, rows_per_part):
                    stop = min(n, start + rows_per_part)
                    parts.append(new_part(len(parts), path, (g,), start, stop, file_row + start))
                file_row += n
                continue
            groups.append(g)
            group_rows += n
            file_row += n
            if group_rows >= rows_per_part:
                parts.append(new_part(len(parts), path, tuple(groups), 0, group_rows,
                                      file_row - group_rows))
                groups, group_rows = [], 0
        if groups:
            parts.append(new_part(len(parts), path, tuple(groups), 0, group_rows,
                                  file_row - group_rows))
    return parts, inputs
