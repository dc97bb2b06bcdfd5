"""Execute the tutorial notebooks at their SMALL settings and save them with their outputs (`make notebooks`).

    python notebooks/execute.py                      # every notebook, one after the other
    python notebooks/execute.py 03_finetune_gpt1_sentiment.ipynb

Each notebook runs top to bottom in a fresh kernel of this interpreter (cwd = notebooks/, MS_GPT_SMALL=1, runs in a
temporary directory, this checkout first on PYTHONPATH). The saved outputs are what the kernel printed and drew,
with two edits, both stated in notebooks/README.md: progress-bar noise is trimmed (a carriage-return-redrawn line
keeps its final state; tqdm bars and MindSpore's allocator banner are dropped; consecutive prints to one stream are
joined) and this machine's paths become `<repo>`, `<runs>` and `<venv>`. The notebook's
metadata gets an `ms_gpt_execution` stamp: the hash of its code cells' sources (what tests/test_notebooks.py compares
to tell stale outputs), the ms_gpt commit, the MindSpore version, the device, SMALL, the CPU and the wall time.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

NOTEBOOK_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(NOTEBOOK_DIR)
STAMP = "ms_gpt_execution"  # the notebook metadata key
CELL_TIMEOUT = 900  # seconds per cell
# tqdm's bars and counters ("  40%|####      | 2/5 [00:01<00:02, 1.9it/s]", "10000 examples [00:00, 5.1 examples/s]")
# and MindSpore's allocator banner, printed once per process
_PROGRESS = re.compile(r"\d+%\|.*\|\s*\d+/\d+|\[\d\d:\d\d(<[\d:?]+)?, |\d(it/s|s/it)\]|^\[MS_ALLOC_CONF\]")
# the probe run after the notebook's own cells (then removed): what the kernel actually used
_PROBE = ("import json as _j, mindspore as _ms, ms_gpt as _g\n"
          "print(_j.dumps({'device': DEVICE.target, 'small': SMALL, 'mindspore': _ms.__version__, "
          "'ms_gpt': _g.__file__}))")


def code_hash(nb) -> str:
    """sha256 of the notebook's code cells' sources, in order: the key that says which code the outputs came from."""
    sources = [cell.source for cell in nb.cells if cell.cell_type == "code"]
    return hashlib.sha256(json.dumps(sources, ensure_ascii=False).encode("utf-8")).hexdigest()


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def trim_text(text: str, replacements: dict) -> str:
    """A stream's text as a reader should see it: each carriage-return-redrawn line at its final state, progress
    bars dropped, machine paths replaced."""
    lines = []
    for line in text.split("\n"):
        line = line.rstrip("\r").split("\r")[-1]
        if _PROGRESS.search(line):
            continue
        for old, new in replacements.items():
            line = line.replace(old, new)
        lines.append(line)
    return "\n".join(lines)


def clean_outputs(nb, replacements: dict) -> None:
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for out in cell.outputs:
            if out.output_type == "stream":
                out.text = trim_text(out.text, replacements)
                if not out.text.strip():
                    continue
                if kept and kept[-1].output_type == "stream" and kept[-1].name == out.name:
                    kept[-1].text = kept[-1].text.rstrip("\n") + "\n" + out.text.lstrip("\n")
                    continue
            elif "data" in out and "text/plain" in out.data:
                out.data["text/plain"] = trim_text(out.data["text/plain"], replacements)
            kept.append(out)
        cell.outputs = kept
        cell.metadata.pop("execution", None)


def execute(path: str, runs_dir: str) -> dict:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    probe = nbformat.v4.new_code_cell(_PROBE)
    nb.cells.append(probe)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": NOTEBOOK_DIR}})
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError on the first failing cell: nothing is saved then
    seconds = time.perf_counter() - start
    nb.cells.pop()
    used = json.loads("".join(o.get("text", "") for o in probe.outputs if o.output_type == "stream").strip())
    if os.path.dirname(os.path.dirname(used["ms_gpt"])) != ROOT:
        raise RuntimeError(f"the kernel imported ms_gpt from {used['ms_gpt']}, not from {ROOT}")
    clean_outputs(nb, {runs_dir: "<runs>", ROOT: "<repo>", sys.prefix: "<venv>"})
    dirty = _git("status", "--porcelain", "--", "ms_gpt", "configs", "data")
    nb.metadata[STAMP] = {
        "code_sha256": code_hash(nb),
        "ms_gpt_commit": _git("rev-parse", "HEAD") + ("-dirty" if dirty else ""),
        "mindspore": used["mindspore"],
        "device": used["device"],
        "small": used["small"],
        "cpu": _cpu(),
        "seconds": round(seconds, 1),
        "executed": time.strftime("%Y-%m-%d", time.gmtime()),
    }
    nbformat.validate(nb)
    nbformat.write(nb, path)
    return nb.metadata[STAMP]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Execute the notebooks at SMALL settings and save their outputs.")
    parser.add_argument("notebooks", nargs="*",
                        help="notebook files or names in notebooks/ (default: every *.ipynb there, one at a time)")
    args = parser.parse_args(argv)
    names = args.notebooks or sorted(f for f in os.listdir(NOTEBOOK_DIR) if f.endswith(".ipynb"))
    paths = [n if os.path.isfile(n) else os.path.join(NOTEBOOK_DIR, os.path.basename(n)) for n in names]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        print(f"error: no such notebook: {', '.join(missing)}", file=sys.stderr)
        return 2
    # the kernel inherits this environment: this checkout's ms_gpt first, SMALL on, quiet MindSpore
    os.environ["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    os.environ["MS_GPT_SMALL"] = "1"
    os.environ["GLOG_v"] = "3"
    for path in paths:
        with tempfile.TemporaryDirectory(prefix="ms_gpt_notebook_") as tmp:
            runs_dir = os.path.join(tmp, "runs")
            os.environ["MS_GPT_RUNS_DIR"] = runs_dir
            stamp = execute(path, runs_dir)
        print(f"{os.path.basename(path)}: {stamp['seconds']} s, {stamp['device']}, MindSpore {stamp['mindspore']}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
