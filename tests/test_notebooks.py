"""The notebooks: committed with the outputs of their own code (read from the files, fast), and executed fresh top
to bottom (SMALL mode), failing on any cell error.

The committed .ipynb files carry the outputs `make notebooks` (notebooks/execute.py) saved, stamped in their metadata
with the hash of the code cells' sources they came from. Fresh runs happen in a kernel of this interpreter with
cwd = notebooks/; their outputs stay in memory and their runs go to a temp dir, not into the repo.
"""
import glob
import importlib.util
import os
import re
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


def _executor():
    spec = importlib.util.spec_from_file_location("notebooks_execute", os.path.join(NOTEBOOK_DIR, "execute.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def committed_problems(nb, code_hash, stamp_key: str) -> list:
    """Why a committed notebook's outputs cannot be trusted as the outputs of its code (empty: they can)."""
    stamp = nb.metadata.get(stamp_key)
    if not stamp:
        return [f"no {stamp_key} stamp in its metadata: run `make notebooks`"]
    problems = []
    if stamp.get("code_sha256") != code_hash(nb):
        problems.append("its code differs from the code its outputs were produced from: run `make notebooks`")
    if stamp.get("small") is not True or not stamp.get("device") or not stamp.get("mindspore") or \
            not stamp.get("ms_gpt_commit"):
        problems.append(f"incomplete stamp {stamp}")
    code = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    problems += [f"cell {i} has no output" for i, c in code if not c.outputs or not c.execution_count]
    problems += [f"cell {i} has an error output" for i, c in code
                 if any(o.output_type == "error" for o in c.outputs)]
    problems += [f"cell {i} printed a traceback" for i, c in code
                 if any("Traceback (most recent call last)" in o.get("text", "") for o in c.outputs)]
    counts = [c.execution_count for _, c in code]
    if counts != list(range(1, len(code) + 1)):
        problems.append(f"cells not run once each, top to bottom (execution counts {counts})")
    if not any("image/png" in o.get("data", {}) for _, c in code for o in c.outputs):
        problems.append("no figure in its outputs")
    return problems


def test_committed_notebooks_carry_the_outputs_of_their_own_code():
    """Each notebook is committed executed (make notebooks): its code hashes to its stamp, every code cell has output
    and none an error, it shows a figure, progress bars are trimmed, no machine path leaks, and notebooks/README.md's
    table lists it."""
    assert len(NOTEBOOKS) >= 2, f"expected the tutorial notebooks in {NOTEBOOK_DIR}"
    executor = _executor()
    with open(os.path.join(NOTEBOOK_DIR, "README.md"), encoding="utf-8") as f:
        listed = set(re.findall(r"^\| `([^`]+\.ipynb)` \|", f.read(), flags=re.M))
    problems = {}
    for path in NOTEBOOKS:
        name = os.path.basename(path)
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        assert "setup_device" in nb.cells[1].source and "SMALL" in nb.cells[1].source, \
            f"{name}: the first code cell must detect the device and set SMALL"
        found = committed_problems(nb, executor.code_hash, executor.STAMP)
        texts = [o.get("text", "") + o.get("data", {}).get("text/plain", "") for c in nb.cells
                 if c.cell_type == "code" for o in c.outputs]
        if any("\r" in t for t in texts):
            found.append("progress-bar carriage returns left in its outputs")
        if any(ROOT in t for t in texts):
            found.append(f"this machine's path {ROOT} in its outputs")
        if name not in listed:
            found.append("missing from the table in notebooks/README.md")
        if found:
            problems[name] = found
    assert problems == {}, problems
    assert listed <= {os.path.basename(p) for p in NOTEBOOKS}, "notebooks/README.md lists notebooks that do not exist"


def test_the_freshness_check_catches_edited_code_and_missing_or_failed_outputs():
    executor = _executor()
    nb = nbformat.read(NOTEBOOKS[0], as_version=4)
    assert committed_problems(nb, executor.code_hash, executor.STAMP) == []
    code = [c for c in nb.cells if c.cell_type == "code"]
    code[-1].source += "\nprint('edited')"
    assert any("code differs" in p for p in committed_problems(nb, executor.code_hash, executor.STAMP))
    nb = nbformat.read(NOTEBOOKS[0], as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    code[2].outputs = []
    code[3].outputs.append(nbformat.v4.new_output("error", ename="ValueError", evalue="x", traceback=[]))
    assert committed_problems(nb, executor.code_hash, executor.STAMP) == [
        f"cell {nb.cells.index(code[2])} has no output", f"cell {nb.cells.index(code[3])} has an error output"]
    # what the executor trims: redrawn lines keep their last state, tqdm bars go, machine paths are replaced
    text = "step 1\rstep 2\rstep 3\n 40%|####      | 2/5 [00:01<00:02,  1.9it/s]\nsaved to /m/runs/x\n"
    assert executor.trim_text(text, {"/m/runs": "<runs>"}) == "step 3\nsaved to <runs>/x\n"


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
