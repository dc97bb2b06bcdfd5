"""Repository hygiene: nothing MindSpore writes at run time is tracked, and no machine-specific absolute path."""
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_ARTIFACTS = ("akg_kernel_meta/", "kernel_meta/", "kernel_build_tmp.key", "rank_", "somas_meta/",
                     "graph_build_", "compile_cache/")


def _tracked():
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return out.splitlines()


def test_no_runtime_artifacts_are_tracked():
    bad = [f for f in _tracked() if any(part in f for part in RUNTIME_ARTIFACTS)]
    assert bad == [], f"files MindSpore writes at run time are tracked by git: {bad[:5]}"


def test_runtime_artifacts_are_ignored():
    probe = ["akg_kernel_meta/x.info", "kernel_meta/x", "kernel_build_tmp.key", "rank_0/x.log", ".venv-ref/x"]
    out = subprocess.run(["git", "check-ignore", *probe], cwd=ROOT, capture_output=True, text=True).stdout
    assert sorted(out.split()) == sorted(probe)


MACHINE_PREFIX = str(ROOT.parent) + "/"  # the folder this checkout sits in


def test_no_machine_absolute_paths():
    hits = [f for f in _tracked() if f.endswith((".py", ".md", ".yaml", "Makefile", ".txt"))
            and MACHINE_PREFIX in (ROOT / f).read_text(encoding="utf-8", errors="replace")]
    assert hits == [], f"absolute paths of one machine in {hits}"
