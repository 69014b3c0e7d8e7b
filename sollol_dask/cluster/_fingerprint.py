"""Fingerprints of parquet files: how a run tells that an input changed or a part is whole.

An input is fingerprinted by its size, row count, a sha256 of its footer (which holds
every column chunk's offset and compressed size, and min/max statistics when written)
and its modification time. A change of size, rows or footer is a change for certain. A
file whose footer is identical but whose modification time moved may have been only
touched or copied, or edited in place without changing any offset or statistic (e.g.
equal-length strings in an uncompressed file written without statistics): then the
bytes of the row groups each finished part was read from are hashed again and compared
with the hash the part recorded (``chunk_digest``). So the only edit not detected is one
that keeps size and footer *and* restores the old modification time.

A part file is whole when its size and sha256 equal what the task recorded when it
committed the part, its footer reads, and its row count and model identity are right.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from .._exceptions import InputError

MAGIC = b"PAR1"
READ_SIZE = 1 << 20


class UnreadableParquet(ValueError):
    """The file has no readable parquet footer; the message says why (no file name)."""


class NotParquet(UnreadableParquet):
    """The file is no parquet file at all (a CSV, say), rather than a damaged one."""


def read_footer(handle: BinaryIO, size: int) -> tuple[pq.FileMetaData, bytes]:
    """The parsed footer and its raw bytes (length and magic included)."""
    try:
        if size < 12:
            if size and handle.read(4) != MAGIC[:size]:
                raise NotParquet("it does not begin with parquet's PAR1 marker")
            raise UnreadableParquet(f"{size} bytes is too short for a parquet file")
        handle.seek(size - 8)
        tail = handle.read(8)
        if tail[4:] != MAGIC:
            handle.seek(0)
            if handle.read(4) != MAGIC:  # no magic at either end: never was parquet
                raise NotParquet("it does not begin or end with parquet's PAR1 marker")
            raise UnreadableParquet("no parquet footer at its end: the file is cut short or "
                                    "is not parquet")
        length = int.from_bytes(tail[:4], "little")
        if length > size - 12:
            raise UnreadableParquet(f"its footer claims {length} bytes of {size}")
        handle.seek(size - 8 - length)
        footer = handle.read(length) + tail
        handle.seek(0)
        meta = pq.ParquetFile(handle).metadata
    except (OSError, pa.ArrowException, ValueError) as exc:
        if isinstance(exc, UnreadableParquet):
            raise
        raise UnreadableParquet(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) \
            from exc
    return meta, footer


def modified(fs, path: str) -> str | None:
    """Modification time as text (nanoseconds where the filesystem has them)."""
    if isinstance(fs, LocalFileSystem):
        return str(os.stat(path).st_mtime_ns)
    info = fs.info(path)
    for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
        if info.get(key) is not None:
            return str(info[key])
    return None


def fingerprint_input(fs, path: str) -> tuple[pq.FileMetaData, dict]:
    """The input's footer metadata and fingerprint; ``InputError`` naming an unreadable file."""
    try:
        size = fs.size(path)
        with fs.open(path, "rb") as handle:
            meta, footer = read_footer(handle, size)
        stamp = modified(fs, path)
    except NotParquet as exc:
        raise InputError(f"input {path} is not a parquet file ({exc}): convert it to parquet "
                         "(e.g. pandas.read_csv(...).to_parquet(...)) or leave it out of the "
                         "input", partition=path) from exc
    except (UnreadableParquet, OSError) as exc:
        raise InputError(f"input {path} is not a readable parquet file ({exc}): repair or "
                         "remove it, then rerun", partition=path) from exc
    return meta, {"path": path, "size": size, "rows": meta.num_rows,
                  "footer_sha256": hashlib.sha256(footer).hexdigest(), "modified": stamp}


def footer_digest(handle: BinaryIO, size: int) -> str:
    """sha256 of the footer of an open parquet file (see ``fingerprint_input``)."""
    return hashlib.sha256(read_footer(handle, size)[1]).hexdigest()


def chunk_digest(handle: BinaryIO, meta: pq.FileMetaData, row_groups: Iterable[int]) -> str:
    """sha256 of the raw bytes of every column chunk of ``row_groups``: what a part was
    read from, compared again when an input's footer is unchanged but its time moved."""
    digest = hashlib.sha256()
    for g in row_groups:
        group = meta.row_group(g)
        for c in range(group.num_columns):
            chunk = group.column(c)
            start = chunk.dictionary_page_offset if chunk.has_dictionary_page \
                else chunk.data_page_offset
            handle.seek(start)
            remaining = chunk.total_compressed_size
            while remaining > 0:
                block = handle.read(min(READ_SIZE, remaining))
                if not block:
                    break
                digest.update(block)
                remaining -= len(block)
    return digest.hexdigest()


def file_digest(fs, path: str) -> str:
    """sha256 of a whole file, read in blocks (hashlib releases the GIL: threads help)."""
    digest = hashlib.sha256()
    with fs.open(path, "rb") as handle:
        while block := handle.read(READ_SIZE):
            digest.update(block)
    return digest.hexdigest()
