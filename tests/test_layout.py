"""The project's layout: folders import only the folders below them, on at most 5 floors; scripts import only the library.

The graph is read from the sources (``tests/layout.py``): no module imports
itself in a circle, no folder imports a folder that imports it back, the
leaf (``utils``) imports no other folder, and no script (``*.py`` at the top
level, ``benchmarks/*.py``) imports another script.
"""
from __future__ import annotations

import pytest

from layout import (BENCHMARK_MODULES, MAX_FLOORS, PACKAGES, SCRIPTS, find_cycle, floors, imports, module_graph,
                    room, room_graph)


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return module_graph()


def test_scripts_import_only_the_library(graph):
    scripts = set(SCRIPTS) | {m for m in graph if m.startswith("benchmarks/") and m not in BENCHMARK_MODULES}
    assert set(SCRIPTS) <= set(graph)
    for script in sorted(scripts):
        bad = sorted(graph[script] & scripts)
        assert not bad, f"{script} imports the script(s) {bad}"
    library = {m for m in graph if m.split(".")[0] in PACKAGES}
    for module in sorted(library):
        bad = sorted(graph[module] & (scripts | set(BENCHMARK_MODULES)))
        assert not bad, f"library module {module} imports the script(s) {bad}"


def test_module_graph_has_no_cycle(graph):
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_folders_form_a_dag_on_at_most_five_floors(graph):
    rooms = room_graph(graph)
    assert set(PACKAGES) <= set(rooms)
    cycle = find_cycle(rooms)
    assert cycle is None, "folders import each other in a circle: " + " -> ".join(cycle)
    floor = floors(rooms)
    assert max(floor.values()) <= MAX_FLOORS, f"{max(floor.values())} floors (at most {MAX_FLOORS}): {floor}"
    assert rooms["utils"] <= {"jittor_env"}, f"the leaf imports {sorted(rooms['utils'] - {'jittor_env'})}"
    # every folder imports only the floors below it: the floors docs/layout.md draws
    assert floor == {"jittor_env": 0, "utils": 1, "models": 2, "datasets": 2, "pretrained": 3, "engine": 3,
                     "evaluation": 3, "visualization": 3, "cli": 3, "apis": 4, "scripts": 5}, floor


def test_the_checker_sees_cycles_and_script_imports(tmp_path):
    """The checker itself: a two-module cycle and a submodule import are found."""
    (tmp_path / "a.py").write_text("import b\n")
    (tmp_path / "b.py").write_text("def f():\n    from a import x\n")
    known = {"a", "b"}
    assert imports("a", str(tmp_path / "a.py"), known) == {"b"}
    assert imports("b", str(tmp_path / "b.py"), known) == {"a"}
    assert imports("benchmarks/x", str(tmp_path / "a.py"), {"b", "benchmarks/b"}) == {"benchmarks/b"}
    (tmp_path / "c.py").write_text("from engine.checkpoint import load_model\nfrom engine import cli, X\n")
    known = {"engine", "engine.checkpoint", "engine.cli"}
    assert imports("c", str(tmp_path / "c.py"), known) == {"engine", "engine.checkpoint", "engine.cli"}
    assert find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert room("models.ops.cca") == "models" and room("train") == "scripts" and room("benchmarks/x") == "scripts"


def test_an_upward_import_is_a_folder_cycle(tmp_path):
    """A copy of the library with one upward import added (models -> engine) fails the folder check."""
    import shutil

    from layout import ROOT
    for package in PACKAGES:
        shutil.copytree(f"{ROOT}/{package}", tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "*.h",
                                                                                                "*.cuh"))
    clean = room_graph(module_graph(str(tmp_path)))
    assert find_cycle(clean) is None
    with open(tmp_path / "models" / "layers.py", "a") as f:
        f.write("\n\ndef _upward():\n    from engine.optim import poly_lr  # noqa: F401\n")
    rooms = room_graph(module_graph(str(tmp_path)))
    assert "engine" in rooms["models"]
    cycle = find_cycle(rooms)
    assert cycle is not None and "models" in cycle and "engine" in cycle, cycle
