"""Every notebook in notebooks/ runs top to bottom without an error (executed in CI).

Each notebook is executed in a fresh ``python3`` kernel with notebooks/ as the working
directory, 300 s per cell; a cell that raises fails the test with the cell and its traceback.
The notebooks are stored without outputs, and nothing is written back.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(
    p.name for p in NOTEBOOK_DIR.glob("*.ipynb")
)  # every notebook, new ones included


def test_the_documented_notebooks_exist():
    assert {
        "quickstart.ipynb",
        "heavy_tails.ipynb",
        "weak_error_w2.ipynb",
        "real_data.ipynb",
    } <= set(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_stored_without_outputs(name):
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code, f"{name} has no code cells"
    assert all(not cell.outputs and cell.execution_count is None for cell in code), (
        f"{name} is stored with outputs; clear them before saving"
    )


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name):
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK_DIR)}}
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError (with the cell and traceback) if any cell raises
    elapsed = time.perf_counter() - start
    errors = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.output_type == "error"
    ]
    assert not errors, f"{name}: {errors[0].ename}: {errors[0].evalue}"
    print(f"{name}: {elapsed:.1f} s")
