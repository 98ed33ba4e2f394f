"""The project's layout: scripts import only the library, and no module imports itself in a circle.

Every ``import`` and ``from ... import`` of the project's own modules is read
from the source (top level and inside functions alike) and resolved to a
module file; the resulting graph must have no cycle, and no script
(``*.py`` at the top level, ``benchmarks/*.py``) may import another script.
"""
from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("models", "datasets", "pretrained", "engine")
LEAVES = {"jittor_env"}  # top-level modules that are not scripts
SCRIPTS = ("train", "evaluate", "convert_weights", "predict", "visualize_attention", "demo", "compare")


def _module_files() -> dict[str, str]:
    """Module name -> file, for the library packages, the top-level modules and the benchmarks."""
    files = {}
    for name in os.listdir(ROOT):
        if name.endswith(".py"):
            files[name[:-3]] = os.path.join(ROOT, name)
    for package in PACKAGES:
        for name in os.listdir(os.path.join(ROOT, package)):
            if name.endswith(".py"):
                module = package if name == "__init__.py" else f"{package}.{name[:-3]}"
                files[module] = os.path.join(ROOT, package, name)
    for name in os.listdir(os.path.join(ROOT, "benchmarks")):
        if name.endswith(".py"):
            files[f"benchmarks/{name[:-3]}"] = os.path.join(ROOT, "benchmarks", name)
    return files


def _imports(module: str, path: str, known: set[str]) -> set[str]:
    """The project modules whose contents ``module`` imports.

    ``from a.b import c`` depends on ``a.b.c`` when that is a module, else on
    ``a.b``; ``import a.b`` on ``a.b``. A package's ``__init__`` is a
    dependency only when names are taken from it (Python starts, but need not
    finish, a package before loading its submodules).
    """
    tree = ast.parse(open(path).read(), path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found = set()

    def resolve(name: str) -> None:
        head = name.split(".")[0]
        if module.startswith("benchmarks/") and f"benchmarks/{head}" in known:
            name = f"benchmarks/{head}"   # a sibling module of the benchmark scripts
        parts = name.split(".")
        for i in range(len(parts), 0, -1):
            candidate = ".".join(parts[:i])
            if candidate in known:
                if candidate != module:
                    found.add(candidate)
                return

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                resolve(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                kept = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(kept + ([base] if base else []))
            for alias in node.names:
                resolve(f"{base}.{alias.name}")
    return found


#: The benchmarks' shared modules (imported by the benchmark scripts, not run).
BENCHMARK_MODULES = ("benchmarks/bench_common", "benchmarks/torch_mirror")


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    files = _module_files()
    return {m: _imports(m, p, set(files)) for m, p in files.items()}


def test_scripts_import_only_the_library(graph):
    scripts = set(SCRIPTS) | {m for m in graph if m.startswith("benchmarks/") and m not in BENCHMARK_MODULES}
    assert set(SCRIPTS) <= set(graph)
    for script in sorted(scripts):
        bad = sorted(graph[script] & scripts)
        assert not bad, f"{script} imports the script(s) {bad}"
    library = {m for m in graph if m.split(".")[0] in PACKAGES}
    for module in sorted(library):
        bad = sorted(graph[module] & scripts)
        assert not bad, f"library module {module} imports the script(s) {bad}"


def test_module_graph_has_no_cycle(graph):
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_the_checker_sees_cycles_and_script_imports(tmp_path):
    """The checker itself: a two-module cycle and a submodule import are found."""
    (tmp_path / "a.py").write_text("import b\n")
    (tmp_path / "b.py").write_text("def f():\n    from a import x\n")
    known = {"a", "b"}
    assert _imports("a", str(tmp_path / "a.py"), known) == {"b"}
    assert _imports("b", str(tmp_path / "b.py"), known) == {"a"}
    assert _imports("benchmarks/x", str(tmp_path / "a.py"), {"b", "benchmarks/b"}) == {"benchmarks/b"}
    (tmp_path / "c.py").write_text("from engine.checkpoint import load_model\nfrom engine import cli, X\n")
    known = {"engine", "engine.checkpoint", "engine.cli"}
    assert _imports("c", str(tmp_path / "c.py"), known) == {"engine", "engine.checkpoint", "engine.cli"}
