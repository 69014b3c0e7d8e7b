"""The notebooks in notebooks/ run top to bottom in a real Jupyter kernel (nbclient +
ipykernel), and are committed with their outputs so they read well on a code host."""

from __future__ import annotations

import sys

import nbformat
import pytest

from .conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
import run_notebooks  # noqa: E402

sys.path.pop(0)

NOTEBOOKS = {path.stem: path for path in run_notebooks.notebook_paths()}


def test_the_four_notebooks_are_there_and_committed_with_outputs():
    assert list(NOTEBOOKS) == ["01_quickstart", "02_parquet_on_dask", "03_real_search",
                               "04_existing_cluster"]
    for name, path in NOTEBOOKS.items():
        nb = nbformat.read(path, as_version=4)
        code = [cell for cell in nb.cells if cell.cell_type == "code"]
        assert all(cell.execution_count for cell in code), f"{name} was not committed executed"
        errors = [o for cell in code for o in cell.outputs if o.output_type == "error"]
        assert not errors, f"{name} was committed with an error output"


def _outputs_text(cell) -> str:
    return "".join(o.get("text", "") or o.get("data", {}).get("text/plain", "")
                   for o in cell.outputs)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", [n for n in NOTEBOOKS if n != "03_real_search"])
def test_notebook_runs_without_a_cell_error(name):
    nb = run_notebooks.execute(NOTEBOOKS[name])  # raises CellExecutionError naming the cell
    assert all(cell.execution_count for cell in nb.cells if cell.cell_type == "code")
    html = [o for cell in nb.cells for o in cell.get("outputs", [])
            if "text/html" in o.get("data", {}) and "sollol-dask fleet</b>" in o["data"]["text/html"]]
    if name != "02_parquet_on_dask":  # 1 and 4 show emb.status() as an HTML table
        assert html, f"{name} shows no fleet table"


@pytest.mark.llama
@pytest.mark.timeout(900)
def test_real_search_notebook_ranks_the_right_passage_first():
    nb = run_notebooks.execute(NOTEBOOKS["03_real_search"])
    check = next(c for c in nb.cells if "search-check" in c.metadata.get("tags", []))
    lines = _outputs_text(check).splitlines()
    assert len(lines) == 6 and all(line.startswith("ok ") for line in lines), lines
    assert "Genesis 25:33  <- Esau sells his birthright" in lines[0]
