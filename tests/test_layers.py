"""The import contract: floors ``sdit`` < ``profiling`` < ``reports`` < ``cli``, and no cycles.

Every module of the four packages is parsed with :mod:`ast`; its imports, at module level and inside
functions alike, become edges between modules (``from pkg import name`` is an edge to the submodule
``pkg.name`` where there is one, else to ``pkg``; relative imports are resolved against the importing
module's package). Importing ``a.b.c`` also runs ``a/__init__`` and ``a/b/__init__``; those implicit
edges are not counted, as in import-linter.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import sdit

ROOT = Path(__file__).resolve().parents[1]
FLOORS = ("sdit", "profiling", "reports", "cli")  # a package may import only its own floor and those before it


def _modules() -> dict[str, Path]:
    """Module name -> file, for every module of the four packages (a package's name for its __init__)."""
    out = {}
    for top in FLOORS:
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _target(name: str, modules: dict[str, Path]) -> str | None:
    """The module of ours that ``name`` (a dotted import path) names: its longest known prefix."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in modules:
            return prefix
    return None


def _imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of ours that ``module`` imports anywhere in its file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for name in names:
            target = _target(name, modules)
            if target is not None and target != module:
                out.add(target)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {module: _imports(module, path, modules) for module, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_parser_sees_imports_inside_functions_and_relative_ones(tmp_path: Path) -> None:
    modules = {"sdit": tmp_path / "__init__.py", "sdit.a": tmp_path / "a.py", "sdit.b": tmp_path / "b.py",
               "profiling": tmp_path / "p.py"}
    modules["sdit.a"].write_text("from . import b\n\ndef f():\n    import profiling\n    from .b import x\n")
    assert _imports("sdit.a", modules["sdit.a"], modules) == {"sdit.b", "profiling"}


def test_no_floor_imports_a_higher_one() -> None:
    rank = {top: i for i, top in enumerate(FLOORS)}
    upward = sorted(f"{src} -> {dst}" for src, targets in _graph().items() for dst in targets
                    if rank[dst.partition(".")[0]] > rank[src.partition(".")[0]])
    assert upward == [], f"imports from a lower floor to a higher one ({' < '.join(FLOORS)}): {upward}"


def test_no_import_cycles() -> None:
    graph = _graph()
    assert _cycles(graph) == []


@pytest.mark.parametrize("name", ["profile", "estimate"])
def test_sdit_names_the_profilers_entry_points_without_importing_them(name: str) -> None:
    with pytest.raises(AttributeError) as info:
        getattr(sdit, name)
    assert str(info.value) == f"sdit.{name} is profiling.{name}: use `from profiling import {name}`"
