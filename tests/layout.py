"""The project's import graph read from its sources: modules, the folders ("rooms") they live in, and floors.

Every ``import`` and ``from ... import`` of the project's own modules is read
from the source (top level and inside functions alike) and resolved to a
module file. A module's room is its top-level folder (``models.ops.cca`` is
in ``models``); the top-level scripts and the benchmark scripts form the room
``scripts``; ``jittor_env`` is floor 0 (it sets Jittor's environment,
imports nothing, and is imported first everywhere). A room's floor is one
above the highest room it imports; the rooms and their floors are drawn in
``docs/layout.md``.
"""
from __future__ import annotations

import ast
import os
from typing import Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: The library's folders, bottom to top as docs/layout.md draws them.
PACKAGES = ("utils", "models", "datasets", "pretrained", "engine", "evaluation", "visualization", "cli", "apis")
#: Top-level modules that are not scripts (floor 0).
LEAVES = ("jittor_env",)
SCRIPTS = ("train", "evaluate", "convert_weights", "predict", "visualize_attention", "demo", "compare")
#: The benchmarks' shared modules (imported by the benchmark scripts, not run).
BENCHMARK_MODULES = ("benchmarks/bench_common", "benchmarks/torch_mirror")
#: The most floors the rooms may stand on (floor 0, jittor_env, not counted).
MAX_FLOORS = 5


def module_files(root: str = ROOT, packages=PACKAGES) -> dict[str, str]:
    """Module name -> file, for the library packages (subpackages included), the top level and the benchmarks."""
    files = {}
    for name in os.listdir(root):
        if name.endswith(".py"):
            files[name[:-3]] = os.path.join(root, name)
    for package in packages:
        for folder, dirs, names in os.walk(os.path.join(root, package)):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            prefix = os.path.relpath(folder, root).replace(os.sep, ".")
            for name in names:
                if name.endswith(".py"):
                    files[prefix if name == "__init__.py" else f"{prefix}.{name[:-3]}"] = os.path.join(folder, name)
    bench = os.path.join(root, "benchmarks")
    for name in os.listdir(bench) if os.path.isdir(bench) else []:
        if name.endswith(".py"):
            files[f"benchmarks/{name[:-3]}"] = os.path.join(bench, name)
    return files


def imports(module: str, path: str, known: set[str]) -> set[str]:
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


def module_graph(root: str = ROOT, packages=PACKAGES) -> dict[str, set[str]]:
    files = module_files(root, packages)
    return {m: imports(m, p, set(files)) for m, p in files.items()}


def room(module: str) -> str:
    """The folder a module lives in; ``scripts`` for the top-level and benchmark scripts; a leaf module itself."""
    if module.startswith("benchmarks/"):
        return "scripts"
    head = module.split(".")[0]
    if "." in module or head in PACKAGES:
        return head
    return head if head in LEAVES else "scripts"


def room_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Room -> the other rooms its modules import."""
    rooms: dict[str, set[str]] = {}
    for module, targets in graph.items():
        rooms.setdefault(room(module), set()).update(room(t) for t in targets)
    return {r: targets - {r} for r, targets in rooms.items()}


def find_cycle(graph: dict[str, set[str]]) -> Optional[list[str]]:
    """A cycle of ``graph`` as a closed path (first == last), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> Optional[list[str]]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def floors(rooms: dict[str, set[str]]) -> dict[str, int]:
    """Room -> floor: 0 for ``jittor_env``, else one above the highest room it imports (the graph must be acyclic)."""
    memo: dict[str, int] = {}

    def floor(r: str) -> int:
        if r not in memo:
            below = [floor(t) for t in rooms.get(r, ())]
            memo[r] = 0 if r in LEAVES else 1 + max(below, default=0)
        return memo[r]

    for r in rooms:
        floor(r)
    return memo


def file_room(path: str) -> Optional[str]:
    """The room of a project source file (None for files outside the library and scripts, tests included)."""
    rel = os.path.relpath(os.path.abspath(path), ROOT)
    if rel.startswith("..") or not rel.endswith(".py"):
        return None
    parts = rel[:-3].split(os.sep)
    if parts[0] == "benchmarks" and len(parts) == 2:
        return "scripts"
    if parts[0] in PACKAGES:
        return parts[0]
    if len(parts) == 1:
        return room(parts[0])
    return None
