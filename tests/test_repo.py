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


def test_readme_layout_table_names_every_module():
    """README's "What is inside" table matches the tree: every module and package under ms_gpt/ is named there
    (a package by its folder, `ms_gpt/{a,b}.py` lists several files), and every path it names exists."""
    import os
    import re

    with open(ROOT / "README.md", encoding="utf-8") as f:
        readme = f.read()
    section = readme.split("## What is inside", 1)[1].split("\n## ", 1)[0]
    named = set()
    first_cells = [row.split("|")[1] for row in section.splitlines() if row.startswith("| `ms_gpt/")]
    for path in (p for cell in first_cells for p in re.findall(r"`(ms_gpt/[^`]+)`", cell)):
        braces = re.fullmatch(r"ms_gpt/\{([^}]+)\}\.py", path)
        named |= {f"ms_gpt/{name}.py" for name in braces.group(1).split(",")} if braces else {path}
    for path in named:
        assert os.path.exists(os.path.join(ROOT, path)), f"README names {path}, which does not exist"
    package = os.path.join(ROOT, "ms_gpt")
    missing = []
    for entry in sorted(os.listdir(package)):
        full = os.path.join(package, entry)
        if os.path.isdir(full) and os.path.isfile(os.path.join(full, "__init__.py")):
            covered = f"ms_gpt/{entry}/" in named or any(n.startswith(f"ms_gpt/{entry}/") for n in named)
        elif entry.endswith(".py") and entry != "__init__.py":
            covered = f"ms_gpt/{entry}" in named
        else:
            continue
        if not covered:
            missing.append(entry)
    assert missing == [], f"README's 'What is inside' table does not name: {missing}"


def test_every_benchmark_option_has_help_text():
    """`--help` of each benchmarks/*.py script explains every option (each add_argument call carries help=...)."""
    import ast

    missing = []
    for script in sorted((ROOT / "benchmarks").glob("*.py")):
        for node in ast.walk(ast.parse(script.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
                if not any(k.arg == "help" for k in node.keywords):
                    missing.append(f"{script.name}:{node.lineno}")
    assert missing == [], f"options without help text: {missing}"
