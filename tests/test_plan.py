"""Which parts a parquet run writes: along row groups, huge groups sliced, deterministic."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sollol_dask import ConfigurationError
from sollol_dask.cluster._plan import list_inputs, plan_parts


def write(path, groups: list[int]) -> None:
    with pq.ParquetWriter(path, pa.schema([("text", pa.string())])) as writer:
        start = 0
        for n in groups:
            writer.write_table(pa.table({"text": [f"t{i}" for i in range(start, start + n)]}))
            start += n


def test_parts_follow_row_groups_and_slice_huge_ones(tmp_path):
    write(tmp_path / "a.parquet", [3, 3, 3, 25, 2])
    fs, paths = list_inputs(str(tmp_path))
    parts, inputs = plan_parts(fs, paths, "text", "embedding", rows_per_part=5)
    shape = [(p.row_groups, p.start, p.stop, p.file_row) for p in parts]
    assert shape == [((0, 1), 0, 6, 0), ((2,), 0, 3, 6), ((3,), 0, 5, 9), ((3,), 5, 10, 14),
                     ((3,), 10, 15, 19), ((3,), 15, 20, 24), ((3,), 20, 25, 29), ((4,), 0, 2, 34)]
    assert sum(p.rows for p in parts) == 36 and parts[0].name == "part-00000.parquet"
    assert len(inputs) == 1 and inputs[0]["rows"] == 36
    again, _ = plan_parts(fs, paths, "text", "embedding", rows_per_part=5)
    assert again == parts  # the same inputs give the same parts (resume relies on it)


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(ConfigurationError, match="does not exist"):
        list_inputs(str(tmp_path / "missing"))
    with pytest.raises(ConfigurationError, match="no parquet files"):
        list_inputs(str(tmp_path))
    write(tmp_path / "a.parquet", [2])
    fs, paths = list_inputs(str(tmp_path))
    with pytest.raises(ConfigurationError, match="column 'body' is not in"):
        plan_parts(fs, paths, "body", "embedding", 5)
    with pytest.raises(ConfigurationError, match="already has a column 'text'"):
        plan_parts(fs, paths, "text", "text", 5)


def test_pending_rows_are_those_of_parts_no_thread_has_started_while_one_is_sent():
    from sollol_dask.cluster._parquet import pending_rows

    class Part:
        def __init__(self, rows):
            self.rows = rows

    parts = [Part(r) for r in (100, 200, 300, 400, 500, 600)]
    # 4 threads: while part 0 is sent, parts 1-3 are too; 4 and 5 wait (1,100 rows).
    assert pending_rows(parts, 4) == [1100, 600, 0, 0, 0, 0]
    assert pending_rows(parts, 1) == [2000, 1800, 1500, 1100, 600, 0]
    assert pending_rows(parts, 16) == [0] * 6
