""""Nothing lost" survives ordinary mistakes (issue 11): a run owns its output directory.

One test per reported case: overwrite deletes only what a manifest lists, parts are
verified before a resume trusts them, two runs never share an output, inputs are
fingerprinted, dst and src never overlap, and damaged files are named in one clear line.
Every test checks what a user notices: the message, the files still there, and the exact
vectors of every row (the sim's vectors are deterministic).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import sollol_dask as sd
from sollol_dask import cli
from sollol_dask.testing import Faults, sim_vectors

from ..conftest import MODEL, local_client

ROWS = 600
TEXTS = [f"integrity row {i} " + "word " * (i % 13) for i in range(ROWS)]
MANIFEST = "_sollol_manifest.json"


@pytest.fixture(scope="module")
def client():
    with local_client(2) as c:
        yield c


def write_corpus(folder: Path, texts: list[str] = TEXTS, files: int = 2,
                 names: list[str] | None = None) -> Path:
    """``files`` parquet files of id + text, row groups of 100 rows."""
    folder.mkdir(parents=True, exist_ok=True)
    per_file = len(texts) // files
    for f in range(files):
        ids = range(f * per_file, (f + 1) * per_file)
        name = names[f] if names else f"file-{f}.parquet"
        pd.DataFrame({"id": list(ids), "text": [texts[i] for i in ids]}).to_parquet(
            folder / name, row_group_size=100)
    return folder


def our_parts(out: Path) -> list[Path]:
    return sorted(out.glob("part-[0-9][0-9][0-9][0-9][0-9].parquet"))


def check_exact(out: Path, texts: list[str] = TEXTS, model: str = MODEL, dim: int = 768) -> None:
    """Every row once, with exactly the vector of its text (only this run's part files)."""
    back = pd.concat([pd.read_parquet(p) for p in our_parts(out)]).sort_values("id")
    assert back["id"].tolist() == list(range(len(texts)))
    assert back["text"].tolist() == texts
    assert np.array_equal(np.stack(back["embedding"].to_numpy()), sim_vectors(model, texts, dim))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# -- case 1: overwrite deletes only files a manifest lists ------------------------------

def test_dst_equal_to_src_with_overwrite_is_refused_and_spark_inputs_are_kept(client, sims,
                                                                              tmp_path):
    spark = [f"part-0000{f}-3f2a9c1e-7b4d-4e55-9a10-5c1d2e3f4a5b-c000.snappy.parquet"
             for f in range(2)]
    src = write_corpus(tmp_path / "warehouse", names=spark)
    before = snapshot(src)
    emb = sd.Embedder([sims("instant").url], model=MODEL)
    with pytest.raises(sd.ConfigurationError) as info:
        emb.embed_parquet(str(src), str(src), overwrite=True)
    message = str(info.value)
    assert f"the output {src} is the input {src}" in message
    assert "outside the inputs" in message
    assert snapshot(src) == before  # the whole corpus is still there, byte for byte


def test_overwrite_keeps_a_users_own_files_in_dst(client, sims, tmp_path):
    src, out = write_corpus(tmp_path / "corpus"), tmp_path / "out"
    out.mkdir()
    pd.DataFrame({"note": ["mine"]}).to_parquet(out / "part-archive.parquet")
    (out / "notes.txt").write_text("keep me")
    mine = snapshot(out)
    emb = sd.Embedder([sims("instant").url], model=MODEL)
    emb.embed_parquet(str(src), str(out), rows_per_part=300)
    report = emb.embed_parquet(str(src), str(out), rows_per_part=100, overwrite=True)
    assert (report.parts_written, report.parts_skipped) == (6, 0)
    kept = snapshot(out)
    assert {name: kept[name] for name in mine} == mine  # the user's files, untouched
    assert [p.name for p in our_parts(out)] == [f"part-{i:05d}.parquet" for i in range(6)]
    check_exact(out)


# -- case 2: resume trusts a part only after it checks out ------------------------------

def test_truncated_empty_and_damaged_parts_are_recomputed_on_resume(client, sims, tmp_path,
                                                                     caplog):
    src, out = write_corpus(tmp_path / "corpus"), tmp_path / "out"
    node = sims("instant")
    emb = sd.Embedder([node.url], model=MODEL)
    first = emb.embed_parquet(str(src), str(out), rows_per_part=100)
    assert (first.parts_written, node.counters.texts) == (6, ROWS)
    truncated, empty, flipped = (out / f"part-0000{i}.parquet" for i in (1, 3, 4))
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    empty.write_bytes(b"")
    data = bytearray(flipped.read_bytes())  # same size, a few bytes changed mid-file
    middle = len(data) // 2
    data[middle:middle + 8] = bytes(b ^ 0xFF for b in data[middle:middle + 8])
    flipped.write_bytes(bytes(data))
    caplog.set_level(logging.WARNING)
    second = emb.embed_parquet(str(src), str(out), rows_per_part=100)
    assert (second.parts_written, second.parts_skipped) == (3, 3)
    assert second.parts_recomputed == 3
    assert "3 failed verification" in str(second)
    assert node.counters.texts == ROWS + 300  # only the three bad parts were embedded again
    for part in (truncated, empty, flipped):
        assert f"{part.name} failed verification" in caplog.text
    check_exact(out)
    assert pd.read_parquet(out).shape[0] == ROWS  # the directory reads again, whole


def test_a_users_part_file_without_manifest_is_refused_not_adopted_nor_deleted(client, sims,
                                                                               tmp_path):
    src, out = write_corpus(tmp_path / "corpus"), tmp_path / "out"
    out.mkdir()
    pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}).to_parquet(out / "part-00000.parquet")
    before = snapshot(out)
    emb = sd.Embedder([sims("instant").url], model=MODEL)
    for overwrite in (False, True):
        with pytest.raises(sd.OutputError) as info:
            emb.embed_parquet(str(src), str(out), rows_per_part=100, overwrite=overwrite)
        message = str(info.value)
        assert f"{out} already holds part-00000.parquet" in message
        assert "no sollol_dask manifest" in message and "Move or delete it" in message
        assert sorted(os.listdir(out)) == ["part-00000.parquet"]  # nothing written, no lock
        assert snapshot(out) == before


def test_parts_of_another_dimension_or_model_are_never_kept(client, sims, tmp_path, caplog):
    src = write_corpus(tmp_path / "corpus")
    node = sims("instant", extra_models=("other-model",))
    small = sims("instant", dimension=384)
    # Without a manifest: parts of a 384-dimension run are refused, not mixed with new ones.
    lost = tmp_path / "lost-manifest"
    sd.Embedder([small.url], model=MODEL).embed_parquet(str(src), str(lost), rows_per_part=100)
    (lost / MANIFEST).unlink()
    old = snapshot(lost)
    with pytest.raises(sd.OutputError,
                       match="already holds part-00000.parquet.*no sollol_dask manifest"):
        sd.Embedder([node.url], model=MODEL).embed_parquet(str(src), str(lost), rows_per_part=100)
    assert snapshot(lost) == old
    # With a manifest: a part of another model copied over one of ours is recomputed.
    out, other = tmp_path / "out", tmp_path / "other"
    emb = sd.Embedder([node.url], model=MODEL)
    emb.embed_parquet(str(src), str(out), rows_per_part=100)
    sd.Embedder([node.url], model="other-model").embed_parquet(str(src), str(other),
                                                               rows_per_part=100)
    shutil.copyfile(other / "part-00002.parquet", out / "part-00002.parquet")
    caplog.set_level(logging.WARNING)
    report = emb.embed_parquet(str(src), str(out), rows_per_part=100)
    assert (report.parts_written, report.parts_skipped) == (1, 5)
    assert report.parts_recomputed == 1
    assert "part-00002.parquet failed verification" in caplog.text
    assert "other-model" in caplog.text
    check_exact(out)


# -- case 3: two runs never share an output ---------------------------------------------

def test_a_second_run_into_the_same_dst_is_refused_while_the_first_holds_it(client, sims,
                                                                            tmp_path):
    src, out = write_corpus(tmp_path / "corpus"), tmp_path / "out"
    node = sims("gpu", faults=Faults(slowdown=4.0))  # ~20 s of work unless sped up
    emb = sd.Embedder([node.url], model=MODEL)
    result: dict = {}

    def first_run() -> None:
        try:
            result["report"] = emb.embed_parquet(str(src), str(out), rows_per_part=100)
        except BaseException as exc:  # surfaced by the assertions below
            result["error"] = exc

    runner = threading.Thread(target=first_run)
    runner.start()
    deadline = time.monotonic() + 60
    while not (node.counters.texts and (out / "_sollol.lock").exists()):  # under way
        assert time.monotonic() < deadline and runner.is_alive(), result
        time.sleep(0.02)
    with pytest.raises(sd.OutputError) as info:  # a second run, same settings
        sd.Embedder([node.url], model=MODEL).embed_parquet(str(src), str(out), rows_per_part=100)
    message = str(info.value)
    assert f"{out} is in use by another run (pid {os.getpid()}" in message
    assert "wait for it to finish" in message and str(out / "_sollol.lock") in message
    node.faults.slowdown = 0.02  # let the first run finish quickly
    runner.join(120)
    assert "error" not in result, result
    assert result["report"].parts_written == 6
    check_exact(out)
    assert not (out / "_sollol.lock").exists() and not list(out.glob(".*.tmp"))


def test_a_stale_lock_of_a_dead_run_is_taken_over(client, sims, tmp_path, caplog):
    src, out = write_corpus(tmp_path / "corpus"), tmp_path / "out"
    out.mkdir()
    # A process takes the lock the way a run does, then dies without releasing it.
    code = ("import os, sys, fsspec\n"
            "from sollol_dask.cluster._ownership import RunLock\n"
            "fs, path = fsspec.core.url_to_fs(sys.argv[1])\n"
            "RunLock.acquire(fs, path, 'deadrun1')\n"
            "print(os.getpid(), flush=True)\n"
            "os.kill(os.getpid(), 9)\n")
    dead = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True,
                          timeout=60)
    assert dead.returncode == -9, dead.stderr
    assert (out / "_sollol.lock").exists()
    caplog.set_level(logging.WARNING)
    report = sd.Embedder([sims("instant").url], model=MODEL).embed_parquet(
        str(src), str(out), rows_per_part=100)
    assert report.parts_written == 6
    assert f"taking over the lock of a run that is gone (pid {dead.stdout.strip()}" in caplog.text
    assert not (out / "_sollol.lock").exists()
    check_exact(out)


# -- case 4: an input changed in place is noticed ---------------------------------------

def write_plain(path: Path, texts: list[str], **options) -> None:
    """Uncompressed, no dictionary: equal-length texts give a file of the same size."""
    table = pa.table({"id": list(range(len(texts))), "text": texts})
    pq.write_table(table, path, compression="none", use_dictionary=False, row_group_size=100,
                   **options)


def footer(path: Path) -> bytes:
    data = path.read_bytes()
    return data[-8 - int.from_bytes(data[-8:-4], "little"):]


def test_an_input_edited_in_place_with_same_size_and_rows_is_detected(client, sims, tmp_path):
    old = [f"edit row {i:04d} old" for i in range(1000)]
    new = [t.replace("old", "new") if i % 5 else t for i, t in enumerate(old)]  # 800 changed
    src, out = tmp_path / "corpus.parquet", tmp_path / "out"
    write_plain(src, old)
    emb = sd.Embedder([sims("instant").url], model=MODEL)
    emb.embed_parquet(str(src), str(out), rows_per_part=250)
    size = src.stat().st_size
    write_plain(src, new)
    assert src.stat().st_size == size and pq.read_metadata(src).num_rows == 1000
    with pytest.raises(sd.OutputError) as info:
        emb.embed_parquet(str(src), str(out), rows_per_part=250)
    message = str(info.value)
    assert f"input {src} changed since the run that wrote {out}" in message
    assert "overwrite=True" in message and "restore the input" in message
    report = emb.embed_parquet(str(src), str(out), rows_per_part=250, overwrite=True)
    assert report.parts_written == 4
    check_exact(out, new)


def test_an_edit_that_keeps_the_footer_is_detected_and_a_touch_is_not_a_change(client, sims,
                                                                               tmp_path):
    texts = [f"edit row {i:04d} old" for i in range(1000)]
    src, out = tmp_path / "corpus.parquet", tmp_path / "out"
    write_plain(src, texts, write_statistics=False)
    emb = sd.Embedder([sims("instant").url], model=MODEL)
    emb.embed_parquet(str(src), str(out), rows_per_part=250)
    stat = src.stat()
    os.utime(src, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))  # touched only
    resumed = emb.embed_parquet(str(src), str(out), rows_per_part=250)
    assert (resumed.parts_written, resumed.parts_skipped) == (0, 4)
    before = footer(src)
    src.write_bytes(src.read_bytes().replace(b"row 0977 old", b"row 0977 new"))  # in place
    assert footer(src) == before and src.stat().st_size == stat.st_size
    with pytest.raises(sd.OutputError, match=f"input {src} changed since the run"):
        emb.embed_parquet(str(src), str(out), rows_per_part=250)


def test_an_append_to_an_input_is_refused_with_the_whole_message(client, sims, tmp_path):
    src, out = write_corpus(tmp_path / "corpus"), tmp_path / "out"
    emb = sd.Embedder([sims("instant").url], model=MODEL)
    emb.embed_parquet(str(src), str(out), rows_per_part=100)
    grown = src / "file-1.parquet"
    frame = pd.read_parquet(grown)
    pd.concat([frame, frame.assign(id=frame["id"] + 300)]).to_parquet(grown, row_group_size=100)
    with pytest.raises(sd.OutputError) as info:
        emb.embed_parquet(str(src), str(out), rows_per_part=100)
    message = str(info.value)
    assert f"input {grown} changed since the run that wrote {out}" in message
    assert "rows 300 -> 600" in message and "..." not in message
    assert message.endswith("or restore the input")


# -- case 6: dst and src never overlap ---------------------------------------------------

def test_dst_inside_src_and_src_inside_dst_are_refused(client, sims, tmp_path):
    src = write_corpus(tmp_path / "work" / "corpus")
    emb = sd.Embedder([sims("instant").url], model=MODEL)
    inside = src / "embedded"
    with pytest.raises(sd.ConfigurationError) as info:
        emb.embed_parquet(str(src), str(inside))
    assert f"the output {inside} is inside the input {src}" in str(info.value)
    assert not inside.exists()
    outer = tmp_path / "work"
    with pytest.raises(sd.ConfigurationError) as info:
        emb.embed_parquet(str(src / "file-0.parquet"), str(outer), overwrite=True)
    assert f"the input {src / 'file-0.parquet'} is inside the output {outer}" in str(info.value)
    assert sorted(p.name for p in src.iterdir()) == ["file-0.parquet", "file-1.parquet"]


# -- case 14 (parquet half): damaged files are named in one clear line ------------------

def test_a_corrupt_manifest_is_named_in_one_line_by_the_api_and_the_cli(client, sims, tmp_path,
                                                                        capsys):
    src, out = write_corpus(tmp_path / "corpus"), tmp_path / "out"
    node = sims("instant")
    emb = sd.Embedder([node.url], model=MODEL)
    emb.embed_parquet(str(src), str(out), rows_per_part=100)
    manifest = out / MANIFEST
    manifest.write_bytes(manifest.read_bytes()[:200])  # cut short, as by a full disk
    with pytest.raises(sd.OutputError) as info:
        emb.embed_parquet(str(src), str(out), rows_per_part=100)
    assert f"the manifest {manifest} is damaged" in str(info.value)
    assert "restore it" in str(info.value)
    capsys.readouterr()
    code = cli.main(["embed", str(src), str(out), "--model", MODEL, "--node", node.url,
                     "--rows-per-part", "100", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith(f"sollol-dask: error: the manifest {manifest} is damaged")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert len(our_parts(out)) == 6  # nothing deleted


def test_a_corrupt_input_footer_names_the_file(client, sims, tmp_path):
    src = write_corpus(tmp_path / "corpus")
    broken = src / "file-1.parquet"
    broken.write_bytes(broken.read_bytes()[:-100])
    emb = sd.Embedder([sims("instant").url], model=MODEL)
    with pytest.raises(sd.InputError) as info:
        emb.embed_parquet(str(src), str(tmp_path / "out"))
    message = str(info.value)
    assert f"input {broken} is not a readable parquet file" in message
    assert "repair or remove it" in message
