"""The flag column of rows the server cut (``embed_parquet(truncated_column=...)``,
``--truncated-column``): which rows, the engine learns (``_runner._flag_truncated``);
here, whether a run may ask for it."""

from __future__ import annotations

import pyarrow.parquet as pq

from .._exceptions import ConfigurationError
from .._settings import RouterSettings


def check_truncated_column(settings: RouterSettings, in_fs, paths: list[str], name: str,
                           output_column: str) -> None:
    """A flag column of cut rows is for the truncate policy, under a name not yet taken."""
    if settings.length_policy != "truncate":
        raise ConfigurationError(
            f"truncated_column={name!r} flags the rows the server cut, which only the "
            f"'truncate' length policy does (this run's is {settings.length_policy!r})")
    taken = {output_column}
    for path in paths:
        with in_fs.open(path, "rb") as handle:
            taken.update(pq.ParquetFile(handle).schema_arrow.names)
    if name in taken:
        raise ConfigurationError(f"truncated_column={name!r} is already a column of the "
                                 "input or the output: choose another name")
