"""The package's imports of its own modules, read from the source with ast: they form no cycle,
and each one made inside a function says what it saves by being there.

A cycle counts whether its imports are at a module's top or inside a function: an import put in
a function hides a cycle from import time, not from the design. Imports under TYPE_CHECKING are
left out (annotations only, never run).

"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "agent_worker_app"
ROOT = Path(__file__).resolve().parents[2] / PACKAGE


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(node: ast.Import | ast.ImportFrom, module: str) -> set[str]:
    """The package's modules an import statement loads (and the packages above them)."""
    names: list[str] = []
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative: from the importing module's package
            package = module.split(".")
            if MODULES[module].name != "__init__.py":
                package = package[:-1]
            package = package[: len(package) - node.level + 1]
            base = ".".join([*package, *([node.module] if node.module else [])])
        names = [base, *(f"{base}.{alias.name}" for alias in node.names)]  # a name or a module
    found = set()
    for name in names:
        parts = name.split(".")
        for end in range(2, len(parts) + 1):  # importing a.b.c runs a.b (its package) first
            if ".".join(parts[:end]) in MODULES:
                found.add(".".join(parts[:end]))
    return found - {module}


def imports(module: str) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Each import statement of the module but those under TYPE_CHECKING, and whether it is
    inside a function."""
    found: list[tuple[ast.Import | ast.ImportFrom, bool]] = []

    def walk(nodes: list[ast.stmt], in_function: bool) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and _type_checking(node):
                walk(node.orelse, in_function)
                continue
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found.append((node, in_function))
                continue
            inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    walk([child], inner)
                elif isinstance(child, ast.ExceptHandler):
                    walk(child.body, inner)

    walk(ast.parse(MODULES[module].read_text(encoding="utf-8")).body, False)
    return found


def graph() -> dict[str, set[str]]:
    return {
        module: set().union(*(_targets(node, module) for node, _ in imports(module)))
        for module in MODULES
    }


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The graph's strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_checker_sees_a_cycle_hidden_in_a_function() -> None:
    edges = graph()
    assert f"{PACKAGE}.driver" in edges[f"{PACKAGE}.agent_worker"]  # imported inside main()
    assert f"{PACKAGE}.agents" in edges[f"{PACKAGE}.agents.claude_agent"]  # its package, first
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_package_has_no_import_cycle() -> None:
    assert cycles(graph()) == []


def test_each_import_inside_a_function_says_what_it_saves() -> None:
    """Only a measured saving (--help stays fast without docker-py, rich or git's machinery)
    keeps an import of the package's own modules inside a function; a comment says what, on
    its line, or just above it or the imports it is grouped with."""
    silent = []
    for module, path in MODULES.items():
        lines = path.read_text(encoding="utf-8").splitlines()
        found = imports(module)
        for i, (node, in_function) in enumerate(found):
            if not in_function or not _targets(node, module):
                continue
            first = i  # the first statement of its group: imports one right after another
            while first > 0 and _next_to(found[first - 1][0], found[first][0], lines):
                first -= 1
            start = found[first][0].lineno
            said = lines[start - 2 : node.end_lineno or node.lineno]
            if not any("#" in line for line in said):
                silent.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}")
    assert silent == []


def _next_to(before: ast.stmt, after: ast.stmt, lines: list[str]) -> bool:
    """Nothing but blank lines between two statements."""
    between = lines[(before.end_lineno or before.lineno) : after.lineno - 1]
    return all(not line.strip() for line in between)
