"""Partition columns of a Hive-partitioned input (``corpus/lang=en/year=2020/x.parquet``).

Such columns live in directory names, not in the files (``df.to_parquet(path,
partition_cols=["lang"])`` writes them so), so reading a file alone loses them. They are
found here with pyarrow's own Hive discovery (types as pyarrow infers them: integers or
strings; ``__HIVE_DEFAULT_PARTITION__`` is null) and each part adds them as ordinary
columns, so an output keeps every input column, as ``pd.read_parquet(src)`` shows them.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.dataset as ds

# One partition column of a file: (name, arrow type as text, value); JSON-friendly, since
# parts are recorded in the manifest.
PartitionValue = tuple[str, str, object]


def partition_values(fs, src: str, paths: list[str]) -> dict[str, tuple[PartitionValue, ...]]:
    """Each input's partition columns (none for inputs outside ``key=value`` directories)."""
    base = _base_dir(fs, src)
    if base is None or not any("=" in p[len(base):] for p in paths):
        return {}
    dataset = ds.dataset(paths, filesystem=fs, format="parquet", partitioning="hive",
                         partition_base_dir=base)
    found: dict[str, tuple[PartitionValue, ...]] = {}
    for fragment in dataset.get_fragments():
        keys = ds.get_partition_keys(fragment.partition_expression)
        if not keys:
            continue
        names = set(fragment.physical_schema.names)  # a column the file holds wins
        found[fragment.path] = tuple(
            (name, str(dataset.schema.field(name).type), keys[name])
            for name in dataset.partitioning.schema.names if name in keys and name not in names)
    return found


def partition_columns(values: tuple[PartitionValue, ...], rows: int) -> list[tuple[pa.Field, pa.Array]]:
    """The columns to append to a part of ``rows`` rows."""
    return [(pa.field(name, pa.type_for_alias(type_name)),
             pa.array([value] * rows, type=pa.type_for_alias(type_name)))
            for name, type_name, value in values]


def _base_dir(fs, src: str) -> str | None:
    """The directory partition names are counted from: ``src`` itself, or a glob's fixed
    head; None for a single file (its directories are not read as partitions)."""
    path = fs._strip_protocol(str(src)).rstrip("/")
    if any(ch in path for ch in "*?["):
        head = path[:min(path.index(ch) for ch in "*?[" if ch in path)]
        return head.rsplit("/", 1)[0] + "/" if "/" in head else ""
    return path + "/" if fs.isdir(path) else None
