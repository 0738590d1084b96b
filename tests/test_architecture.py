"""The module structure: no import cycles (imports inside functions included), and
docs/architecture.md names every module it describes."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "costspan"


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """costspan module -> the costspan modules it imports anywhere in its file."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name in modules)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parent, base] if base else parent)
                for alias in node.names:
                    candidate = f"{base}.{alias.name}"
                    target = candidate if candidate in modules else base
                    if target in modules:
                        deps.add(target)
        deps.discard(name)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for dep in graph.get(node, ()):
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_imports_inside_functions() -> None:
    """The check would be blind if it missed lazy imports: the CLI's are found."""
    graph = import_graph()
    assert "costspan._estimate" in graph["costspan._cli"]  # imported inside a command


def test_cycle_detection_finds_a_cycle() -> None:
    """The cycle finder reports a two-module loop (so an empty answer below means something)."""
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]


def test_no_module_imports_itself_through_others() -> None:
    """No import cycle between costspan's modules, counting imports inside functions."""
    assert cycles(import_graph()) == []


def test_the_architecture_page_names_every_module() -> None:
    """docs/architecture.md's table names each top-level module (ledgers/ and testing/ as one)."""
    page = (ROOT / "docs" / "architecture.md").read_text()
    top_level = {
        name.split(".")[1]
        for name in import_graph()
        if name.count(".") >= 1 and name.split(".")[1] not in ("__main__",)
    }
    missing = sorted(m for m in top_level if f"`{m}`" not in page)
    assert missing == []
