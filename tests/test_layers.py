"""The package's layers (docs/architecture.md): imports point down only, no module imports itself through others,
and only the command line knows argparse. Read from the source with ``ast`` (imports inside functions count)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "densepure"

#: layer -> the layers it may import (besides itself and the package's ``__init__``, which holds the version)
ALLOWED = {
    "core": set(),
    "files": set(),
    "models": {"core", "files"},
    "job": {"core", "files"},
    "theory": {"core"},
    "plan": {"core", "files", "models", "job"},
    "report": {"core", "files", "models", "job", "plan", "theory"},
    "cli": {"core", "files", "models", "job", "plan", "theory", "report"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py") if "_resources" not in p.parts}


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The package modules ``path`` imports (``from densepure.x import y`` counts ``densepure.x.y`` when y is a
    module, else ``densepure.x``); relative imports are resolved."""
    current = module_name(path)
    package = current if path.name == "__init__.py" else current.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "densepure"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != "densepure":
                continue
            for alias in node.names:
                out.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return out - {current}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, known) & known.keys() for name, path in known.items()}


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else None


def test_every_module_is_in_a_layer():
    loose = [m for m in modules() if layer(m) is None and m not in ("densepure", "densepure.__main__")]
    assert not loose, f"modules outside the layers: {loose}"


def test_imports_point_down_the_layers():
    against = sorted(f"{a} -> {b}" for a, targets in graph().items() for b in targets
                     if layer(a) and layer(b) and layer(b) != layer(a) and layer(b) not in ALLOWED[layer(a)])
    assert not against, "imports against the layers:\n" + "\n".join(against)


def test_no_import_cycles():
    edges = graph()
    cycles, index, low, stack, on_stack = [], {}, {}, [], set()

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
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
                cycles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert not cycles, f"modules importing each other in a circle: {cycles}"


def test_only_the_command_line_knows_argparse():
    users = sorted(name for name, path in modules().items() if layer(name) != "cli" and any(
        isinstance(node, (ast.Import, ast.ImportFrom)) and "argparse" in (
            [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""])
        for node in ast.walk(ast.parse(path.read_text()))))
    assert not users, f"argparse outside densepure/cli/: {users}"


def test_the_checks_find_what_they_look_for(tmp_path, monkeypatch):
    """A circle, an upward import and argparse in a library module are found (the checks can fail)."""
    fake = tmp_path / "densepure"
    for layer_name in ("core", "cli"):
        (fake / layer_name).mkdir(parents=True)
        (fake / layer_name / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "core" / "a.py").write_text("import argparse\nfrom densepure.core import b\nfrom densepure.cli import c\n")
    (fake / "core" / "b.py").write_text("def f():\n    from densepure.core.a import x\n")
    (fake / "cli" / "c.py").write_text("")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    edges = graph()
    assert edges["densepure.core.a"] == {"densepure.core.b", "densepure.cli.c"}
    assert edges["densepure.core.b"] == {"densepure.core.a"}
    for check in (test_imports_point_down_the_layers, test_no_import_cycles, test_only_the_command_line_knows_argparse):
        try:
            check()
        except AssertionError:
            continue
        raise AssertionError(f"{check.__name__} passed on a package that breaks it")
