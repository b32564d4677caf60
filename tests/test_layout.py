"""The package layout: no import cycles (module-level and deferred imports alike); the core does not need the harness."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "resprompt"


def _module_name(path: Path) -> str:
    parts = ["resprompt", *path.relative_to(SRC).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Every resprompt module ``path`` imports, anywhere in the file except under ``if TYPE_CHECKING``."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    skip = {id(n) for t in ast.walk(tree) if isinstance(t, ast.If) and _is_type_checking(t) for n in ast.walk(t)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("resprompt")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("resprompt"):
                continue
            for alias in node.names:  # `from . import formats` imports the submodule formats
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in modules else target)
    return {m for m in found if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    files = sorted(SRC.rglob("*.py"))
    modules = {_module_name(f) for f in files}
    return {_module_name(f): _imports(f, modules) for f in files}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_graph_is_read_right():
    graph = _graph()
    assert "resprompt.formats" in graph["resprompt.model"]  # a deferred import counts
    assert "resprompt.prompt.placement" in graph["resprompt.model"]  # `from .prompt import placement`
    assert "resprompt.model" not in graph["resprompt.formats"]  # TYPE_CHECKING only
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycles():
    assert _cycle(_graph()) is None


def test_the_core_does_not_import_the_experiment_harness():
    graph = _graph()
    core = [m for m in graph if not m.startswith("resprompt.experiments") and m != "resprompt.cli"]
    for m in core:
        assert not any(d.startswith("resprompt.experiments") for d in graph[m]), m
