"""Optional per-row columns of ``embed_parquet``: the flag of rows the server cut
(``truncated_column``, learnt by ``_runner._flag_truncated``) and the tokens of each row
(``n_tokens_column``, by a node's tokenizer); here, whether a run may ask for them, and
the arrow columns."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
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
    check_new_column(in_fs, paths, "truncated_column", name, output_column)


def check_new_column(in_fs, paths: list[str], keyword: str, name: str, *taken: str) -> None:
    """``name`` is not a column of any input, nor one of ``taken``."""
    names = set(taken)
    for path in paths:
        with in_fs.open(path, "rb") as handle:
            names.update(pq.ParquetFile(handle).schema_arrow.names)
    if name in names:
        raise ConfigurationError(f"{keyword}={name!r} is already a column of the input or "
                                 "the output: choose another name")


def tokens_array(n_tokens: np.ndarray) -> pa.Array:
    """int64 counts, null where no node could count (or the row has no vector)."""
    return pa.array(n_tokens, pa.int64(), mask=n_tokens < 0)
