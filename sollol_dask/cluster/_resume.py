"""Getting an output directory ready for a run that holds its lock: what to delete, what
to refuse, and which existing parts can be trusted.

Rules (the run owns its output, nothing else in dst):
- only files the old manifest lists are deleted or replaced, plus the run's own temporary
  files (the lock proves their writer gone);
- a file with a planned part's name that no manifest lists is refused, never adopted or
  deleted (it may be a user's file, or parts whose manifest was lost);
- an existing part is trusted only if its size and sha256 equal its commit record, its
  footer reads, and its row count and model identity are right; any other is recomputed.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import logging

from .._exceptions import OutputError
from ._fingerprint import UnreadableParquet, chunk_digest, file_digest, read_footer
from ._manifest import (MANIFEST, RECORDS, check_same_run, fold_records, input_changed,
                        listed_files, read_manifest, read_records)
from ._plan import PartSpec

logger = logging.getLogger(__name__)

METADATA_KEY = b"sollol_dask"  # the parts' schema metadata: model, digest, dimension
TEMPORARY = (".part-*.tmp", f".{MANIFEST}.*.tmp", f"{RECORDS}/.*.tmp", "_errors/.*.tmp")


@dataclasses.dataclass
class Prepared:
    todo: list[PartSpec]  # parts this run computes
    committed: dict[str, dict]  # commit records of the verified parts, by name
    recomputed: dict[str, str]  # parts that existed but failed verification: the reason


def prepare_output(fs, dst: str, parts: list[PartSpec], manifest: dict, *, overwrite: bool,
                   token: str, in_fs) -> Prepared:
    """Check, clean and verify ``dst`` for ``manifest``'s run (the caller holds the lock),
    then write the manifest. Raises ``OutputError`` before deleting anything if the run
    must not go ahead."""
    old = read_manifest(fs, dst)
    existing = {path.rstrip("/").rsplit("/", 1)[-1] for path in fs.ls(dst, detail=False)}
    listed = listed_files(old)
    touched = check_same_run(old, manifest, dst) if old is not None and not overwrite else []
    foreign = sorted(p.name for p in parts if p.name in existing and p.name not in listed)
    if foreign:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise OutputError(
            f"{dst} already holds {foreign[0]}{more}, which no sollol_dask manifest there "
            "lists: it may be someone else's file, and a run deletes or replaces only files its "
            "manifest lists. Move or delete it, or choose another output directory")
    _remove_temporary(fs, dst)
    committed: dict[str, dict] = {}
    recomputed: dict[str, str] = {}
    if old is not None and overwrite:
        for name in sorted(listed & existing):
            fs.rm(f"{dst}/{name}")
        logger.info("%s: overwrite: removed %d parts of the earlier run", dst,
                    len(listed & existing))
    elif old is not None:
        records = {**(old.get("committed") or {}), **read_records(fs, dst)}
        present = [p for p in parts if p.name in existing]
        identity = {k: manifest[k] for k in ("model", "digest", "dimension")}
        for spec, reason in _verify_all(fs, dst, present, records, identity):
            if reason is None:
                committed[spec.name] = records[spec.name]
            else:
                recomputed[spec.name] = reason
                logger.warning("%s/%s failed verification (%s): recomputing it", dst, spec.name,
                               reason)
        _check_touched(in_fs, dst, touched, parts, committed)
    fold_records(fs, dst, manifest, committed, token, strict=True)
    return Prepared([p for p in parts if p.name not in committed], committed, recomputed)


def _remove_temporary(fs, dst: str) -> None:
    """Temporary files of runs that stopped; only the lock holder gets here."""
    for pattern in TEMPORARY:
        for path in fs.glob(f"{dst}/{pattern}"):
            logger.info("removing %s, left by a run that stopped", path)
            with contextlib.suppress(FileNotFoundError):
                fs.rm(path)


def _verify_all(fs, dst: str, specs: list[PartSpec], records: dict[str, dict],
                identity: dict) -> list[tuple[PartSpec, str | None]]:
    if not specs:
        return []
    # Hashing is I/O and hashlib releases the GIL: a few threads read parts side by side.
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(specs))) as pool:
        reasons = pool.map(lambda s: verify_part(fs, dst, s, records.get(s.name), identity), specs)
        return list(zip(specs, reasons))


def verify_part(fs, dst: str, spec: PartSpec, record: dict | None, identity: dict) -> str | None:
    """None if the part at ``dst/spec.name`` can be trusted, else why not (the sha256 of
    the whole file last: it is the only check that reads more than the footer)."""
    if record is None:
        return "it has no commit record"
    path = f"{dst}/{spec.name}"
    try:
        size = fs.size(path)
        with fs.open(path, "rb") as handle:
            meta, _ = read_footer(handle, size)
        written = json.loads((meta.metadata or {}).get(METADATA_KEY, b"{}"))
        if any(written.get(key) != value for key, value in identity.items()):
            return (f"written by model {written.get('model')!r} (digest "
                    f"{str(written.get('digest'))[:12]}, dimension {written.get('dimension')}), "
                    f"this run embeds with {identity['model']!r} (digest "
                    f"{str(identity['digest'])[:12]}, dimension {identity['dimension']})")
        if meta.num_rows != spec.rows:
            return f"{meta.num_rows} rows, {spec.rows} planned"
        if size != record.get("size"):
            return f"{size} bytes, {record.get('size')} when it was committed"
        if file_digest(fs, path) != record.get("sha256"):
            return "its bytes differ from those committed (sha256)"
    except (OSError, UnreadableParquet, ValueError) as exc:
        return f"it does not read: {exc}"
    return None


def _check_touched(in_fs, dst: str, touched: list[str], parts: list[PartSpec],
                   committed: dict[str, dict]) -> None:
    """An input whose footer is unchanged but whose time moved: compare the bytes each
    trusted part was read from with the hash the part recorded."""
    for path in touched:
        specs = [p for p in parts if p.file == path and p.name in committed]
        digests: dict[tuple[int, ...], str] = {}
        with in_fs.open(path, "rb") as handle:
            meta, _ = read_footer(handle, in_fs.size(path))
            for spec in specs:
                if spec.row_groups not in digests:
                    digests[spec.row_groups] = chunk_digest(handle, meta, spec.row_groups)
                if digests[spec.row_groups] != committed[spec.name].get("source_sha256"):
                    raise input_changed(
                        path, dst, f"same size, rows and footer, but the rows {spec.name} was "
                        f"embedded from (from row {spec.file_row}) hold other bytes")
        logger.info("%s was touched (modification time) but the rows already embedded are "
                    "unchanged", path)
