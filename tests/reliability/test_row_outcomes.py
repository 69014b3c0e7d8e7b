"""Every row accounted for: on a corpus with every kind of bad row mixed into good ones,
across a real LocalCluster, each row is either embedded (exactly as in a fault-free run)
or listed once in ``_errors`` with its reason; ``--retry-errors`` fills exactly the listed
rows once the cause is gone."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import sollol_dask as sd
from sollol_dask.cli import main as cli_main
from sollol_dask.testing import Faults, sim_vectors

from ..conftest import MODEL, local_client

ROWS = 1200
CONTEXT = 64  # tokens: the sim counts one per 4 characters


@pytest.fixture(scope="module")
def client():
    with local_client(2) as client:
        yield client


def write_corpus(path) -> dict[int, str]:
    """Good rows ``good i``; returns the bad rows' expected reasons by row number."""
    values: list[bytes | None] = [f"good {i}".encode() for i in range(ROWS)]
    bad = {}
    for row in (7, 450, 1101):
        values[row] = b"broken \xff\xfe bytes"  # not UTF-8: parquet does not check
        bad[row] = "invalid-unicode"
    for row in (30, 600, 999):
        values[row] = f"long {row} ".encode() * 100  # > 64 tokens with truncate=False
        bad[row] = "too-long"
    for row in (120, 800):
        values[row] = f"POISON {row}".encode()  # every node answers it with a NaN 400
        bad[row] = "bad-answer"
    values[55] = None  # a null stays a null, not an error
    binary = pa.array(values, pa.binary())
    text = pa.Array.from_buffers(pa.string(), len(values), binary.buffers(),
                                 null_count=binary.null_count)
    pq.write_table(pa.table({"id": pa.array(range(ROWS)), "text": text}), path,
                   row_group_size=400)
    return bad


def test_every_row_is_embedded_or_listed_and_retry_fills_exactly_those(client, sims, tmp_path):
    nodes = [sims("gpu", context_length=CONTEXT, faults=Faults(poison="POISON"))
             for _ in range(2)]
    src, dst = tmp_path / "in.parquet", tmp_path / "out"
    bad = write_corpus(src)
    emb = sd.Embedder([n.url for n in nodes], model=MODEL, truncate=False)

    report = emb.embed_parquet(str(src), str(dst), rows_per_part=300)

    assert (report.rows, report.null_rows) == (ROWS, 1)
    assert report.row_errors == {"invalid-unicode": 3, "too-long": 3, "bad-answer": 2}
    assert report.embedded == ROWS - 1 - len(bad)
    errors = pd.read_parquet(dst / "_errors").sort_values("row")
    assert errors["row"].tolist() == sorted(bad)  # each bad row once
    assert dict(zip(errors["row"], errors["reason"])) == bad
    assert set(errors["file"]) == {str(src)}
    assert errors.loc[errors["row"] == 30, "message"].item().startswith(
        "row 30 is 800 characters long, longer than the model's context of 64 tokens on ")
    assert set(errors.loc[errors["reason"] != "invalid-unicode", "node"]) <= {n.url for n in nodes}
    out = pd.read_parquet(dst).sort_values("id")
    good = [i for i in range(ROWS) if i not in bad and i != 55]
    vectors = np.stack(out["embedding"].to_numpy()[good])
    assert np.array_equal(vectors, sim_vectors(MODEL, [f"good {i}" for i in good], 768))
    assert out["embedding"].isna().to_numpy().nonzero()[0].tolist() == sorted([55, *bad])
    # Tokens: what the sims reported for the rows they embedded (len // 4 + 1 each).
    assert report.tokens == sum(len(f"good {i}") // 4 + 1 for i in good)
    assert f"row errors  8 (2 bad-answer, 3 invalid-unicode, 3 too-long): listed in {dst}" \
        in str(report)

    for node in nodes:  # the cause of the wrong answers is gone
        node.faults.poison = ""
    sent_before = sum(n.counters.texts for n in nodes)
    code = cli_main(["embed", str(src), str(dst), "--model", MODEL, "--rows-per-part", "300",
                     "--scheduler", client.scheduler.address, "--retry-errors", "--no-progress",
                     "--length-policy", "reject",
                     *(f"--node={n.url}" for n in nodes)])
    assert code == 0
    assert sum(n.counters.texts for n in nodes) - sent_before == 2  # the two poisoned rows
    out = pd.read_parquet(dst).sort_values("id")
    assert np.array_equal(np.stack(out["embedding"].to_numpy()[[120, 800]]),
                          sim_vectors(MODEL, ["POISON 120", "POISON 800"], 768))
    left = pd.read_parquet(dst / "_errors")
    assert sorted(left["row"]) == sorted(r for r, why in bad.items() if why != "bad-answer")
    assert out["embedding"].isna().sum() == 1 + 6


def test_raise_mode_still_fails_on_the_first_bad_row(client, sims, tmp_path):
    node = sims("gpu", context_length=CONTEXT)
    src = tmp_path / "in.parquet"
    pd.DataFrame({"text": ["ok"] * 30 + ["long " * 200] + ["ok"] * 9}).to_parquet(src)
    emb = sd.Embedder([node.url], model=MODEL, truncate=False)
    with pytest.raises(sd.InputError, match=r"row 30 is longer than the model's context"):
        emb.embed_parquet(str(src), str(tmp_path / "out"), on_invalid="raise")
    with pytest.raises(sd.InputError, match=r"row 1 is not valid Unicode text"):
        emb.embed(["fine", "broken \ud800 surrogate"])
