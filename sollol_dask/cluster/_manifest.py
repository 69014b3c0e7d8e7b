"""The manifest of a parquet run, and the commit records of its parts.

``dst/_sollol_manifest.json`` names what the output is (model, digest, dimension and the
settings), the fingerprinted inputs, the planned parts, and the committed parts with
their size and sha256. Only the run holding the lock writes it, through a temporary name
unique to the run and an atomic rename.

Tasks finish on many workers at once, so they never touch the manifest: a task writes its
part to a temporary name, then a small commit record ``dst/_sollol_parts/<part>.json``
(atomically), then renames the part into place. A part file therefore always has its
record (a record without its part only means "recompute"). The client folds the records
into the manifest at the start and the end of a run and removes them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import uuid

from .._exceptions import OutputError
from ._plan import PartSpec

logger = logging.getLogger(__name__)

MANIFEST = "_sollol_manifest.json"
RECORDS = "_sollol_parts"
FORMAT = 2
# What makes two runs' parts interchangeable; the inputs are compared on their own.
IDENTITY_KEYS = ("model", "digest", "dimension", "options", "column", "output_column",
                 "on_invalid", "rows_per_part", "prefix")


def manifest_for(parts: list[PartSpec], inputs: list[dict], identity: dict) -> dict:
    return {"format": FORMAT, **identity, "inputs": inputs,
            "parts": [_part_record(p) for p in parts],
            "committed": {}}


def _part_record(part: PartSpec) -> dict:
    """A part as JSON reads it back (lists, not tuples), so plans compare equal. Without
    partition columns the record is as before they existed: older outputs still resume."""
    record = dataclasses.asdict(part) | {"row_groups": list(part.row_groups), "name": part.name}
    if part.partition:
        record["partition"] = [list(value) for value in part.partition]
    else:
        del record["partition"]
    return record


def read_manifest(fs, dst: str) -> dict | None:
    """The manifest in ``dst``, None if there is none; ``OutputError`` if it is damaged."""
    path = f"{dst}/{MANIFEST}"
    try:
        raw = fs.cat_file(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise OutputError(f"cannot read the manifest {path}: {exc}. Fix its permissions, "
                          "then rerun") from exc
    try:
        manifest = json.loads(raw)
        if not isinstance(manifest, dict) or not isinstance(manifest.get("parts"), list):
            raise ValueError("it is not a sollol_dask manifest")
        if not all(isinstance(p["name"], str) for p in manifest["parts"]):
            raise ValueError("its part names are not text")
        if not all(isinstance(i["path"], str) for i in manifest.get("inputs") or []):
            raise ValueError("its input paths are not text")
        committed = manifest.get("committed") or {}
        if not isinstance(committed, dict) or not all(isinstance(r, dict)
                                                      for r in committed.values()):
            raise ValueError("its commit records are not objects")
    except (ValueError, KeyError, TypeError) as exc:
        raise OutputError(
            f"the manifest {path} is damaged ({exc}), so which files in {dst} a run wrote is "
            "unknown: restore it, or move the output away (or choose another output "
            "directory) and rerun") from exc
    return manifest


def listed_files(manifest: dict | None) -> set[str]:
    """The part names a manifest claims: the only files a run may delete or replace."""
    if manifest is None:
        return set()
    return {p["name"] for p in manifest["parts"]} | set(manifest.get("committed") or {})


def write_manifest(fs, dst: str, manifest: dict, token: str) -> None:
    path = f"{dst}/{MANIFEST}"
    tmp = f"{dst}/.{MANIFEST}.{token}.tmp"  # unique per run: two writers never share it
    try:
        with fs.open(tmp, "wb") as handle:
            handle.write(json.dumps(manifest, indent=1).encode())
        fs.mv(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            fs.rm(tmp)
        raise OutputError(f"cannot write {path}: {exc}. Free space or fix permissions, then "
                          "rerun: finished parts are kept") from exc


def check_same_run(old: dict, new: dict, dst: str) -> list[str]:
    """Refuse to resume output of other settings or inputs; return the inputs whose
    modification time alone moved (their content is compared by the caller)."""
    if old.get("format") != FORMAT:
        raise OutputError(
            f"{dst} holds output of an older sollol_dask (manifest format {old.get('format')}, "
            f"now {FORMAT}): pass overwrite=True (--overwrite) to start over, or choose another "
            "output directory")
    for key in IDENTITY_KEYS:
        if old.get(key) != new.get(key):
            raise OutputError(
                f"{dst} holds output of another run ({key} was {json.dumps(old.get(key))}, now "
                f"{json.dumps(new.get(key))}): pass overwrite=True (--overwrite) to start over, "
                "or choose another output directory")
    before = {i["path"]: i for i in old.get("inputs", [])}
    now = {i["path"]: i for i in new["inputs"]}
    redo = "pass overwrite=True (--overwrite) to recompute everything"
    if gone := sorted(set(before) - set(now)):
        raise OutputError(
            f"input {gone[0]}{_more(gone)} was read by the run that wrote {dst} and is no "
            f"longer among the inputs: {redo}, or restore the input")
    if added := sorted(set(now) - set(before)):
        raise OutputError(
            f"input {added[0]}{_more(added)} is new since the run that wrote {dst}: {redo}, or "
            "remove the input (embed it into another output directory)")
    touched = []
    for path, fingerprint in now.items():
        old_print = before[path]
        changes = [f"{key} {old_print.get(key)} -> {fingerprint[key]}" for key in ("size", "rows")
                   if old_print.get(key) != fingerprint[key]]
        if not changes and old_print.get("footer_sha256") != fingerprint["footer_sha256"]:
            changes.append("same size and rows, but its parquet footer (data offsets or "
                           "statistics) differs")
        if changes:
            raise input_changed(path, dst, "; ".join(changes))
        if old_print.get("modified") != fingerprint["modified"]:
            touched.append(path)
    if old.get("parts") != new["parts"]:
        raise OutputError(f"{dst} was planned differently (another sollol_dask version?): pass "
                          "overwrite=True (--overwrite) to start over")
    return touched


def input_changed(path: str, dst: str, how: str) -> OutputError:
    return OutputError(
        f"input {path} changed since the run that wrote {dst} ({how}): parts embedded from its "
        "old content would not match it. Pass overwrite=True (--overwrite) to recompute "
        "everything, or restore the input")


def _more(names: list[str]) -> str:
    return f" (and {len(names) - 1} more)" if len(names) > 1 else ""


# -- commit records ---------------------------------------------------------------------

def write_record(fs, dst: str, name: str, record: dict, token: str) -> None:
    """A task's commit record of one part, written atomically (raises OSError)."""
    folder = f"{dst}/{RECORDS}"
    tmp = f"{folder}/.{name}.{token}-{uuid.uuid4().hex[:8]}.tmp"
    fs.makedirs(folder, exist_ok=True)
    try:
        with fs.open(tmp, "wb") as handle:
            handle.write(json.dumps(record).encode())
        fs.mv(tmp, f"{folder}/{name}.json")
    except BaseException:
        with contextlib.suppress(OSError):
            fs.rm(tmp)
        raise


def read_records(fs, dst: str) -> dict[str, dict]:
    """Commit records not yet folded into the manifest, by part name. A record that does
    not read is dropped: its part is then recomputed, never trusted."""
    records: dict[str, dict] = {}
    for path in fs.glob(f"{dst}/{RECORDS}/*.json"):
        name = path.rsplit("/", 1)[-1][: -len(".json")]
        try:
            record = json.loads(fs.cat_file(path))
            if isinstance(record, dict):
                records[name] = record
        except (OSError, ValueError):
            logger.warning("commit record %s does not read: %s will be recomputed", path, name)
    return records


def fold_records(fs, dst: str, manifest: dict, committed: dict[str, dict], token: str, *,
                 strict: bool = False) -> None:
    """Write ``committed`` into the manifest, then remove the record files. Unless
    ``strict``, a manifest that cannot be written (a full disk) only logs: the records
    stay and are read by the next run."""
    planned = {p["name"] for p in manifest["parts"]}
    manifest["committed"] = {k: v for k, v in sorted(committed.items()) if k in planned}
    try:
        write_manifest(fs, dst, manifest, token)
    except OutputError as exc:
        if strict:
            raise
        logger.warning("%s; the parts' commit records stay in %s/%s", exc, dst, RECORDS)
        return
    folder = f"{dst}/{RECORDS}"
    for path in fs.glob(f"{folder}/*.json"):
        with contextlib.suppress(OSError):
            fs.rm(path)
    with contextlib.suppress(OSError):
        if not fs.ls(folder):
            fs.rmdir(folder)
