"""Layering: which ms_gpt module may import which, checked by reading the source (AST), function-level imports
included. Each module's docstring states its rule in a "Must not import:" paragraph; RULES below is the same rule
for the machine, and a test keeps the two naming the same modules.

The rule for the model's lazy import: ms_gpt.model may import ms_gpt.checkpoint only inside a function
(from_pretrained / save_pretrained delegate to it), and the checkpoint package never imports ms_gpt.model, so
there is no import cycle. Adapters sit on top: ms_gpt.lora imports ms_gpt.checkpoint and ms_gpt.config, and neither
imports ms_gpt.lora — lora registers its PEFT directory layout with checkpoint I/O (`register_layout`) and the package's
__init__ imports lora. The console-script table (ms_gpt.cli) imports the entry points; they run through ms_gpt.entry,
never back through ms_gpt.cli. `test_the_package_has_no_import_cycle` checks that no import (function-level ones
included) closes a cycle.
"""
import ast
import os
from dataclasses import dataclass

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "ms_gpt")


@dataclass(frozen=True)
class Rule:
    forbid: tuple = ()  # modules (and their submodules) that must not be imported
    only: tuple = None  # if set: the only ms_gpt modules that may be imported
    lazy: tuple = ()  # modules that may be imported only inside a function


ENTRY_POINTS = ("ms_gpt.pretrain", "ms_gpt.finetune", "ms_gpt.generate", "ms_gpt.chat", "ms_gpt.evaluate",
                "ms_gpt.demo")
ENTRY_FORBID = ("ms_gpt.model", "ms_gpt.engine", "ms_gpt.data", "ms_gpt.checkpoint", "ms_gpt.compat",
                "ms_gpt.tokenizers", "ms_gpt.lora")
# A rule applies to the module it names and to every module below it (ms_gpt.data -> ms_gpt.data.lm, ...).
RULES = {
    "ms_gpt": Rule(forbid=("ms_gpt.compat", "ms_gpt.data", "ms_gpt.recipes")),  # the package root only
    "ms_gpt._launch": Rule(only=()),
    "ms_gpt.paths": Rule(only=()),
    "ms_gpt.device": Rule(only=()),
    "ms_gpt.compat": Rule(only=()),
    "ms_gpt.entry": Rule(only=()),
    "ms_gpt.config": Rule(forbid=("ms_gpt.model", "ms_gpt.engine", "ms_gpt.data", "ms_gpt.recipes", "ms_gpt.compat",
                                  "ms_gpt.tokenizers", "ms_gpt.checkpoint", "ms_gpt.lora")),
    "ms_gpt.tokenizers": Rule(only=("ms_gpt.paths",)),
    "ms_gpt.model": Rule(forbid=("ms_gpt.data", "ms_gpt.engine", "ms_gpt.recipes", "ms_gpt.compat",
                                 "ms_gpt.tokenizers"), lazy=("ms_gpt.checkpoint",)),
    "ms_gpt.lora": Rule(forbid=("ms_gpt.engine", "ms_gpt.data", "ms_gpt.recipes", "ms_gpt.compat")),
    "ms_gpt.checkpoint": Rule(forbid=("ms_gpt.model", "ms_gpt.engine", "ms_gpt.data", "ms_gpt.recipes",
                                      "ms_gpt.compat", "ms_gpt.tokenizers", "ms_gpt.lora")),
    "ms_gpt.checkpoint.files": Rule(only=()),
    "ms_gpt.checkpoint.hub": Rule(only=("ms_gpt.checkpoint.files",)),
    "ms_gpt.checkpoint.safetensors_io": Rule(only=("ms_gpt.checkpoint.files",)),
    "ms_gpt.checkpoint.torch_bin": Rule(only=("ms_gpt.paths", "ms_gpt.checkpoint.files")),
    "ms_gpt.engine": Rule(forbid=("ms_gpt.recipes", "ms_gpt.data", "ms_gpt.compat", "ms_gpt.tokenizers")),
    "ms_gpt.data": Rule(forbid=("ms_gpt.engine", "ms_gpt.recipes", "ms_gpt.compat")),
    "ms_gpt.generation": Rule(forbid=("ms_gpt.engine", "ms_gpt.data", "ms_gpt.recipes", "ms_gpt.compat")),
    "ms_gpt.exporter": Rule(forbid=("ms_gpt.engine", "ms_gpt.data", "ms_gpt.recipes", "ms_gpt.compat")),
    # the MindIR runner reads only the exported files: no model code, no source weights
    "ms_gpt.exported": Rule(forbid=("ms_gpt.model", "ms_gpt.checkpoint", "ms_gpt.lora", "ms_gpt.engine", "ms_gpt.data",
                                    "ms_gpt.recipes", "ms_gpt.compat")),
    # the serving engine drives the model's graphs with token ids: no training engine, data or text
    "ms_gpt.serving.engine": Rule(forbid=("ms_gpt.engine", "ms_gpt.data", "ms_gpt.recipes", "ms_gpt.compat",
                                          "ms_gpt.tokenizers")),
    # the HTTP side of serving: the wire format stands alone; the app gets the model loaded (or loads it lazily)
    "ms_gpt.serving.protocol": Rule(only=()),
    "ms_gpt.serve": Rule(forbid=ENTRY_FORBID),  # an entry point (recipes never import it either)
    "ms_gpt.serving.app": Rule(forbid=("ms_gpt.engine", "ms_gpt.data", "ms_gpt.recipes", "ms_gpt.compat",
                                       "ms_gpt.checkpoint"), lazy=("ms_gpt.model", "ms_gpt.tokenizers")),
    "ms_gpt.dialogue": Rule(forbid=("ms_gpt.engine", "ms_gpt.recipes", "ms_gpt.compat")),
    "ms_gpt.evaluation": Rule(forbid=("ms_gpt.engine", "ms_gpt.recipes", "ms_gpt.compat")),
    "ms_gpt.recipes": Rule(forbid=ENTRY_POINTS + ("ms_gpt.cli",)),
    # mindnlp's Trainer is fine-tuning's `--trainer mindnlp` alone
    "ms_gpt.recipes.pretrain": Rule(forbid=ENTRY_POINTS + ("ms_gpt.cli", "ms_gpt.compat")),
    "ms_gpt.recipes.dialogue": Rule(forbid=ENTRY_POINTS + ("ms_gpt.cli", "ms_gpt.compat")),
    "ms_gpt.cli": Rule(forbid=ENTRY_FORBID),
    **{name: Rule(forbid=ENTRY_FORBID) for name in ENTRY_POINTS},
    "ms_gpt.export": Rule(forbid=ENTRY_FORBID),  # an entry point (the recipes never run it)
}
# Third-party libraries: mindnlp only through ms_gpt.compat.mindnlp; torch and transformers never (reference only).
THIRD_PARTY = {"mindnlp": "ms_gpt.compat.mindnlp", "torch": None, "transformers": None, "peft": None}

# Imports that break a rule today, each with why it is allowed for now. A fixed one must leave this list (a test
# fails while an entry no longer happens), so the list only shrinks.
KNOWN_VIOLATIONS = {
    ("ms_gpt.data.tasks", "ms_gpt.compat.mindnlp"):
        "the one place data meets mindnlp: open_hub_dataset loads hub datasets with mindnlp's load_dataset, imported "
        "inside the function (mindnlp comes only through ms_gpt.compat.mindnlp)",
}
DOCSTRING_EXEMPT = ()  # modules whose docstrings need not state their rule (none)


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def module_files() -> dict:
    """{dotted module name: path} of every .py file under ms_gpt/ (a package's __init__ under the package name)."""
    out = {}
    for folder, dirs, files in os.walk(PACKAGE):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for file in sorted(files):
            if file.endswith(".py"):
                parts = os.path.relpath(os.path.join(folder, file), ROOT)[:-3].split(os.sep)
                out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = os.path.join(folder, file)
    return out


def imports_of(module: str, source: str, is_package: bool = False, known: frozenset = frozenset()):
    """[(imported module, line, inside a function)] for every import statement in `source`, relative ones resolved
    against `module`; `from pkg import name` gives pkg.name when that is a module (in `known`)."""
    package = module if is_package else module.rpartition(".")[0]
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((alias.name, child.lineno, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module
                for alias in child.names:
                    sub = f"{target}.{alias.name}"
                    found.append((sub if sub in known else target, child.lineno, in_function))
            visit(child, nested)

    visit(ast.parse(source), False)
    return found


def violations(module: str, imported: list) -> list:
    """[(module, imported module, line, why)] for the rules that apply to `module`."""
    bad = []
    for target, line, lazy in imported:
        top = target.split(".")[0]
        if top in THIRD_PARTY and not (THIRD_PARTY[top] and _under(module, THIRD_PARTY[top])):
            where = f"only {THIRD_PARTY[top]} imports it" if THIRD_PARTY[top] else "ms_gpt never imports it"
            bad.append((module, target, line, where))
        if top != "ms_gpt":
            continue
        for prefix, rule in RULES.items():
            applies = module == prefix if prefix == "ms_gpt" else _under(module, prefix)
            if not applies:
                continue
            if any(_under(target, name) for name in rule.forbid):
                bad.append((module, target, line, f"the rule of {prefix} forbids it"))
            elif rule.only is not None and not any(_under(target, n) for n in rule.only + rule.lazy):
                bad.append((module, target, line, f"{prefix} may import only {', '.join(rule.only) or 'no ms_gpt'}"))
            if not lazy and any(_under(target, name) for name in rule.lazy):
                bad.append((module, target, line, f"{prefix} may import it only inside a function"))
    return bad


@pytest.fixture(scope="module")
def scanned():
    files = module_files()
    known = frozenset(files)
    out = {}
    for module, path in files.items():
        with open(path, encoding="utf-8") as f:
            out[module] = imports_of(module, f.read(), path.endswith("__init__.py"), known)
    return out


def test_no_module_imports_a_layer_it_must_not(scanned):
    found = [v for module, imported in scanned.items() for v in violations(module, imported)]
    new = [f"{m}:{line} imports {t} ({why})" for m, t, line, why in found if (m, t) not in KNOWN_VIOLATIONS]
    assert new == [], "layering violations:\n" + "\n".join(new)


def _owner(target: str, modules) -> str:
    """The ms_gpt module an imported name lives in (ms_gpt.model.Conv1D -> ms_gpt.model), or None outside ms_gpt."""
    while target and target not in modules:
        target = target.rpartition(".")[0]
    return target or None


def import_cycles(graph: dict) -> list:
    """The strongly connected components of more than one module (or a module importing itself), sorted."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_the_package_has_no_import_cycle(scanned):
    """No chain of imports, function-level ones included, leads from an ms_gpt module back to itself (a package's
    __init__ importing its own submodules is not a cycle unless one imports the package back)."""
    modules = set(scanned)
    graph = {m: {o for t, _, _ in imported if (o := _owner(t, modules)) and o != m} for m, imported in scanned.items()}
    assert import_cycles(graph) == []
    # the checker finds a cycle through a function-level import, and the old cli <-> entry point one
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"ms_gpt.cli": {"ms_gpt.pretrain"}, "ms_gpt.pretrain": {"ms_gpt.cli"}}) == [
        ["ms_gpt.cli", "ms_gpt.pretrain"]]


def test_adapters_sit_on_top_of_checkpoint_io_and_configuration(scanned):
    """ms_gpt.lora imports checkpoint I/O and configuration; neither imports it back, not even inside a function."""
    lora = {t for t, _, _ in scanned["ms_gpt.lora"]}
    assert any(_under(t, "ms_gpt.checkpoint") for t in lora) and any(_under(t, "ms_gpt.config") for t in lora)
    below = [(m, t, line) for m, imported in scanned.items() for t, line, _ in imported
             if (_under(m, "ms_gpt.checkpoint") or m == "ms_gpt.config") and _under(t, "ms_gpt.lora")]
    assert below == []


def test_known_violations_still_happen(scanned):
    """A fixed violation must be removed from KNOWN_VIOLATIONS, so that it cannot come back unnoticed."""
    found = {(m, t) for module, imported in scanned.items() for m, t, _, _ in violations(module, imported)}
    stale = sorted(set(KNOWN_VIOLATIONS) - found)
    assert stale == [], f"fixed, remove from KNOWN_VIOLATIONS: {stale}"


def test_every_rule_names_existing_modules():
    modules = set(module_files())
    named = set(RULES) | {n for rule in RULES.values() for n in rule.forbid + (rule.only or ()) + rule.lazy}
    named |= {m for pair in KNOWN_VIOLATIONS for m in pair}
    assert sorted(n for n in named if not any(_under(m, n) for m in modules)) == []


def test_the_scanner_sees_relative_and_function_level_imports():
    source = ("from ..engine.trainer import Trainer\nimport mindnlp.core\nfrom . import lm\n"
              "def f():\n    from ..checkpoint import load_pretrained\n    import ms_gpt.recipes.finetune\n")
    known = frozenset({"ms_gpt.data.lm", "ms_gpt.checkpoint", "ms_gpt.engine.trainer"})
    got = imports_of("ms_gpt.data.fake", source, known=known)
    assert got == [("ms_gpt.engine.trainer", 1, False), ("mindnlp.core", 2, False), ("ms_gpt.data.lm", 3, False),
                   ("ms_gpt.checkpoint", 5, True), ("ms_gpt.recipes.finetune", 6, True)]
    why = {target: reason for _, target, _, reason in violations("ms_gpt.data.fake", got)}
    assert set(why) == {"ms_gpt.engine.trainer", "mindnlp.core", "ms_gpt.recipes.finetune"}
    # the model's checkpoint import is allowed inside a function only
    assert violations("ms_gpt.model", [("ms_gpt.checkpoint", 5, True)]) == []
    assert violations("ms_gpt.model", [("ms_gpt.checkpoint", 1, False)])[0][3].endswith("only inside a function")
    assert violations("ms_gpt.checkpoint.hub", [("ms_gpt.paths", 1, False)])  # outside its allow-list


def _rule_paragraph(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        doc = ast.get_docstring(ast.parse(f.read())) or ""
    start = doc.find("Must not import")
    return "" if start < 0 else doc[start:].split("\n\n")[0]


def test_docstrings_say_what_the_module_owns_and_state_its_rule():
    """Every module has a docstring; every module a rule applies to has a "Must not import" paragraph, and the
    paragraph of a module a rule names exactly mentions every module of that rule."""
    missing, unstated, differ = [], [], []
    for module, path in module_files().items():
        with open(path, encoding="utf-8") as f:
            if not (ast.get_docstring(ast.parse(f.read())) or "").strip():
                missing.append(module)
        if any(_under(module, p) for p in DOCSTRING_EXEMPT):
            continue
        applies = [p for p in RULES if (module == p if p == "ms_gpt" else _under(module, p))]
        paragraph = _rule_paragraph(path)
        if applies and not paragraph:
            unstated.append(module)
        if module in RULES:
            rule = RULES[module]
            absent = [n for n in rule.forbid + (rule.only or ()) + rule.lazy if n not in paragraph]
            if rule.only == () and "any ms_gpt module" not in paragraph:
                absent.append("'any ms_gpt module'")
            if absent:
                differ.append(f"{module}: {', '.join(absent)}")
    assert missing == [], f"modules without a docstring: {missing}"
    assert unstated == [], f"modules without a 'Must not import' paragraph: {unstated}"
    assert differ == [], "docstring rule paragraphs that do not name their RULES entry:\n" + "\n".join(differ)
