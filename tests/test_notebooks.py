"""Execute every notebook in notebooks/ top to bottom (SMALL mode) and fail on any cell error.

Each notebook runs in a fresh kernel of this interpreter with cwd = notebooks/; executed outputs stay in memory
(the committed .ipynb files keep their outputs cleared) and runs go to a temp dir, not into the repo.
"""
import glob
import os
import sys
import time

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK_DIR = os.path.join(ROOT, "notebooks")
NOTEBOOKS = sorted(glob.glob(os.path.join(NOTEBOOK_DIR, "*.ipynb")))
CELL_TIMEOUT = 600  # seconds; a SMALL training cell takes well under a minute on 2 idle cores


def test_notebooks_exist_and_are_clean():
    assert len(NOTEBOOKS) >= 2, f"expected the tutorial notebooks in {NOTEBOOK_DIR}"
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
        assert not dirty, f"{os.path.basename(path)}: cells {dirty} have outputs; commit notebooks cleared"
        assert "setup_device" in nb.cells[1].source and "SMALL" in nb.cells[1].source, \
            f"{os.path.basename(path)}: the first code cell must detect the device and set SMALL"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[os.path.basename(p) for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    # the kernel inherits this environment: the SMALL switch, a throw-away runs dir, quiet MindSpore
    monkeypatch.setenv("MS_GPT_SMALL", "1")
    monkeypatch.setenv("MS_GPT_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("GLOG_v", "3")
    nb = nbformat.read(path, as_version=4)
    # "python3" resolves to this interpreter (jupyter_client swaps the spec's "python" for sys.executable)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": NOTEBOOK_DIR}})
    start = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as err:
        pytest.fail(f"{os.path.basename(path)} failed:\n{err}")
    elapsed = time.perf_counter() - start
    sys.stderr.write(f"{os.path.basename(path)}: {elapsed:.1f} s\n")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    ran = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in ran), "every code cell must have run"
    # every notebook draws something; a missing image means a plot silently went to a non-inline backend
    images = [o for c in ran for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, f"{os.path.basename(path)} displayed no figure"
