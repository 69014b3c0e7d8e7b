"""The tree shows the layers (docs: architecture, "Layers, as folders"): every module's
imports, read with ast (function-level ones included), keep to its layer, and no two
modules import each other, directly or through others."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sollol_dask"
IO_AND_ASYNC = {"asyncio", "distributed", "dask", "aiohttp", "httpx", "tornado", "socket"}
DASK = {"distributed", "dask"}
# The commands at the top: `sollol-dask sim` and `demo` run the simulated nodes.
COMMANDS = {"sollol_dask.cli", "sollol_dask.demo", "sollol_dask.__main__"}
FACADE = {"sollol_dask", "sollol_dask._embedder", "sollol_dask._config"} | COMMANDS


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (``from x import y``: x.y when
    y is a module of the package, else x)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            if node.module == "__future__":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in MODULES else target)
    return found


PATHS = {module_name(p): p for p in PACKAGE.rglob("*.py")}
MODULES = set(PATHS)
# Top-level modules below every folder: errors, outcome, settings, nodes, secrets.
BASE = {n for n, p in PATHS.items() if p.parent == PACKAGE and p.name != "__init__.py"} - FACADE
IMPORTS = {name: imports_of(path) for name, path in PATHS.items()}


def top(name: str) -> str:
    return name.split(".")[0]


def within(name: str, folder: str) -> bool:
    return name == f"sollol_dask.{folder}" or name.startswith(f"sollol_dask.{folder}.")


def test_the_package_was_found():
    assert {"sollol_dask.engine._router", "sollol_dask.policy._balancer",
            "sollol_dask.cluster._plugin"} <= MODULES


@pytest.mark.parametrize("name", sorted(n for n in MODULES if within(n, "policy")))
def test_policy_is_pure(name):
    outside = {i for i in IMPORTS[name] if top(i) in IO_AND_ASYNC}
    assert not outside, f"{name} imports {outside}"
    upward = {i for i in IMPORTS[name] if top(i) == "sollol_dask" and not within(i, "policy")
              and i not in BASE}
    assert not upward, f"{name} imports layers above policy: {upward}"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if within(n, "engine")
                                        or within(n, "backends") or within(n, "discovery")))
def test_engine_and_backends_know_nothing_of_dask(name):
    assert not {i for i in IMPORTS[name] if top(i) in DASK}, IMPORTS[name]
    assert not {i for i in IMPORTS[name] if within(i, "cluster") or within(i, "dashboard")}


def test_only_the_cluster_dashboard_and_facade_import_the_cluster():
    for name, imported in IMPORTS.items():
        if within(name, "cluster") or within(name, "dashboard") or name in FACADE:
            continue
        assert not {i for i in imported if within(i, "cluster")}, name


def test_product_code_never_imports_testing():
    for name, imported in IMPORTS.items():
        if within(name, "testing") or name in COMMANDS:
            continue
        assert not {i for i in imported if within(i, "testing")}, name


def test_cluster_does_not_import_the_dashboard():
    for name in (n for n in MODULES if within(n, "cluster")):
        assert not {i for i in IMPORTS[name] if within(i, "dashboard")}, name


def test_no_import_cycles():
    graph = {name: {i for i in imported if i in MODULES and i != name}
             for name, imported in IMPORTS.items()}
    # A package's __init__ re-exports its modules: an edge into a package means its
    # __init__, and a module importing a sibling through its own package is fine.
    for name in graph:
        graph[name] = {i for i in graph[name] if not name.startswith(i + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
