"""The SciCat client's rooms stay small enough to hold in one's head (issue 19).

Cheap static checks with :mod:`ast`: no file of ``scingestor/scicat/`` over
450 lines, no function there over 60, and no import circle among them
(imports made only for type hints do not count).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

SCICAT = Path(__file__).resolve().parent.parent / "scingestor" / "scicat"
MAX_FILE_LINES = 450
MAX_FUNCTION_LINES = 60


def _modules() -> Dict[str, ast.Module]:
    return {p.stem: ast.parse(p.read_text(), str(p)) for p in sorted(SCICAT.glob("*.py"))}


def test_files_are_small() -> None:
    sizes = {p.name: len(p.read_text().splitlines()) for p in SCICAT.glob("*.py")}
    assert {n: s for n, s in sizes.items() if s > MAX_FILE_LINES} == {}


def test_functions_are_short() -> None:
    long: List[str] = []
    for name, tree in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {length} lines")
    assert long == []


def _runtime_imports(tree: ast.Module) -> Set[str]:
    """Sibling modules imported at run time (``if TYPE_CHECKING:`` blocks skipped)."""
    found: Set[str] = set()
    todo: List[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        todo.extend(ast.iter_child_nodes(node))
    return found


def test_no_import_circle() -> None:
    modules = _modules()
    graph = {name: _runtime_imports(tree) & set(modules) for name, tree in modules.items()}
    graph.pop("__init__", None)

    def reaches(start: str, goal: str, seen: Set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    assert [name for name in graph if reaches(name, name, {name})] == []
