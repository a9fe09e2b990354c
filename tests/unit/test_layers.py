"""The package's layers point one way: read from the source, imports inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "asyncml"
# The core, which serves every entry point and so may know none of them.
CORE = ("asyncml.store", "asyncml.engine", "asyncml.tasks", "asyncml.models")
ENTRY_POINTS = ("asyncml.api", "asyncml.cli")


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every asyncml module ``path`` imports, at module level or inside a function; a
    ``from package import name`` counts as an import of ``package.name`` if that is a
    module."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:  # a module of the package, or a name from its __init__
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {module for module in found if module in known and module != name}


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node but those under ``if TYPE_CHECKING:`` (imports for types never run)."""
    nodes: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        nodes.append(node)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and ast.unparse(child.test) == "TYPE_CHECKING":
                todo.extend(child.orelse)
                continue
            todo.append(child)
    return nodes


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, or None. Imports of a package by its own modules (the parent's
    ``__init__`` runs first anyway) are not edges."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if node.startswith(f"{target}."):
                continue
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state and (found := visit(target)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_package_has_no_import_cycle() -> None:
    graph = _graph()
    # The package's own __init__ re-exports the public names; modules never import it.
    assert not [name for name, targets in graph.items() if "asyncml" in targets], (
        "import from the module that defines a name, not from the asyncml package"
    )
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


@pytest.mark.parametrize("layer", CORE)
def test_the_core_imports_no_entry_point(layer: str) -> None:
    graph = _graph()
    wrong = {
        f"{name} imports {target}"
        for name, targets in graph.items()
        if name == layer or name.startswith(f"{layer}.")
        for target in targets
        if target.startswith(ENTRY_POINTS)
    }
    assert not wrong


def test_below_the_entry_points_only_settings_reads_the_environment() -> None:
    readers = sorted(
        name
        for name, path in _modules().items()
        if not name.startswith(ENTRY_POINTS)
        and ("os.environ" in path.read_text() or "os.getenv" in path.read_text())
    )
    assert set(readers) <= {"asyncml.settings"}, readers


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The check above can fail: a graph with a loop is reported, with its path."""
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a.x": {"a"}, "a": {"a.x"}}) is None  # a package and its own module
