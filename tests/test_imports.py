"""The modules' imports form no circle: no module imports (even lazily, inside a function) one that
imports it back, so each can be read, tested and loaded on its own terms."""

from __future__ import annotations

import ast
from pathlib import Path

import fashionssl

PACKAGE = Path(fashionssl.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """The fashionssl modules `path` imports anywhere in it (relative or absolute)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names |= {f"{base}.{alias.name}" for alias in node.names} | {base}
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
    return names


def test_no_module_imports_one_that_imports_it_back():
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: {m for m in imported(path) if m in modules and m != name} for name, path in modules.items()}
    assert "fashionssl.probe" in graph["fashionssl.train"]  # (the walk sees relative imports)

    def circle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        while stack:
            node, trail = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    return trail + [start]
                if nxt not in trail:
                    stack.append((nxt, trail + [nxt]))
        return None

    # a package's __init__ importing its own submodules is how packages work, not a circle
    circles = [c for m in graph if (c := circle_from(m)) and not any(
        b.startswith(a + ".") or a.startswith(b + ".") for a, b in zip(c, c[1:]))]
    assert not circles, circles
