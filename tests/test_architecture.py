"""The package's tiers as a map of imports (docs/architecture.md): every import runs down or
sideways within a tier, never up, and no modules import each other in a circle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "pinnkan"

# lowest first; a module may import its own tier and the tiers below it
TIERS = (
    ("pinnkan.errors", "pinnkan.version", "pinnkan.common"),
    ("pinnkan.io",),
    ("pinnkan.layers",),
    ("pinnkan.network",),
    ("pinnkan.pde",),
    ("pinnkan.adapters",),
    ("pinnkan.pinn",),
    ("pinnkan.train",),
    ("pinnkan.run",),
    ("pinnkan.report",),
    ("pinnkan.stages",),
    ("pinnkan.cli", "pinnkan"),
)
MAX_LINES = 350


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that `path` imports anywhere (top level, in functions, type-only)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m in known}


def tier(module: str) -> int:
    """The index in TIERS of the longest prefix that names `module`'s tier."""
    best = (-1, -1)
    for i, names in enumerate(TIERS):
        for name in names:
            if module == name or module.startswith(name + "."):
                best = max(best, (len(name), i))
    if best[1] < 0:
        raise AssertionError(f"{module} belongs to no tier of TIERS")
    return best[1]


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, known) - {name} for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles() -> None:
    assert cycles(graph()) == []


def test_no_import_runs_up_a_tier() -> None:
    upward = [
        f"{a} (tier {tier(a)}) imports {b} (tier {tier(b)})"
        for a, targets in sorted(graph().items())
        for b in sorted(targets)
        if tier(b) > tier(a)
    ]
    assert upward == []


def test_every_module_is_in_a_tier_and_short() -> None:
    long = []
    for name, path in modules().items():
        tier(name)
        n = len(path.read_text().splitlines())
        if n > MAX_LINES:
            long.append(f"{name}: {n} lines")
    assert long == []


def test_the_checks_find_a_circle_and_an_upward_import() -> None:
    """The walkers above are not vacuous: a planted circle and an upward edge are found."""
    planted = {
        "pinnkan.io.results": {"pinnkan.run.runner"},
        "pinnkan.run.runner": {"pinnkan.io.results"},
    }
    assert cycles(planted) == [["pinnkan.io.results", "pinnkan.run.runner"]]
    assert tier("pinnkan.run.runner") > tier("pinnkan.io.results")
    with pytest.raises(AssertionError, match="no tier"):
        tier("elsewhere.module")
