"""Execute the notebooks in notebooks/ with a real Jupyter kernel (nbclient + ipykernel).

    python scripts/run_notebooks.py                 # run all; exit 1 naming the failing cell
    python scripts/run_notebooks.py --write         # ... and write the outputs back (to commit)
    python scripts/run_notebooks.py 01_quickstart   # some (names without .ipynb)

Each notebook runs in its own kernel with notebooks/ as the working directory, this
interpreter's environment and its bin/ first on PATH (so ``!sollol-dask`` is this install's).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
CELL_TIMEOUT = 600  # a cell that starts a cluster or embeds a corpus on 2 cores


def notebook_paths(names: list[str] | None = None) -> list[Path]:
    paths = sorted(NOTEBOOKS.glob("[0-9]*.ipynb"))
    if names:
        paths = [p for p in paths if p.stem in names]
    return paths


def execute(path: Path) -> nbformat.NotebookNode:
    """The executed notebook; raises CellExecutionError (naming the cell) on any error."""
    nb = nbformat.read(path, as_version=4)
    bin_dir = str(Path(sys.executable).parent)
    os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()
    return nb


def main(argv: list[str]) -> int:
    write = "--write" in argv
    names = [a for a in argv if not a.startswith("--")]
    failed = 0
    for path in notebook_paths(names):
        started = time.monotonic()
        try:
            nb = execute(path)
        except CellExecutionError as err:
            failed += 1
            print(f"FAILED {path.name}: {str(err)[-3000:]}", flush=True)
            continue
        if write:
            nbformat.write(nb, path)
        print(f"ok {path.name} ({time.monotonic() - started:.0f} s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
