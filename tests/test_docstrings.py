"""Every public module, class, function and method under ``backend/`` has a docstring.

The source is read with ``ast`` (nothing is imported). Public means the name does not
start with ``_``; a definition inside a private module, a private class or a function is
not public. Dunder methods are exempt (a class's docstring describes how to build it), and
so are property setters and deleters (the getter's docstring covers the property).
"""

from __future__ import annotations

import ast
from pathlib import Path

BACKEND = Path(__file__).resolve().parent.parent / "backend"


def _is_public(name: str) -> bool:
    return not name.startswith("_")


def _is_accessor(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A ``@x.setter`` / ``@x.deleter`` (or ``@typing.overload``) twin of a documented def."""
    for deco in node.decorator_list:
        if isinstance(deco, ast.Attribute) and deco.attr in ("setter", "deleter", "overload"):
            return True
        if isinstance(deco, ast.Name) and deco.id == "overload":
            return True
    return False


def _missing_in(body: list[ast.stmt], prefix: str) -> list[str]:
    """Public definitions without a docstring among ``body`` (a module's or a class's)."""
    missing: list[str] = []
    for node in body:
        if isinstance(node, ast.ClassDef) and _is_public(node.name):
            if ast.get_docstring(node) is None:
                missing.append(f"{prefix}{node.name}")
            missing += _missing_in(node.body, f"{prefix}{node.name}.")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _is_public(node.name):
            if ast.get_docstring(node) is None and not _is_accessor(node):
                missing.append(f"{prefix}{node.name}")
    return missing


def undocumented() -> dict[str, list[str]]:
    """Map each module (dotted name) to its public definitions lacking a docstring."""
    found: dict[str, list[str]] = {}
    for path in sorted(BACKEND.rglob("*.py")):
        rel = path.relative_to(BACKEND.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        # A private module (``_x.py``) or package is not part of the public surface.
        if any(part.startswith("_") for part in parts):
            continue
        module = ".".join(parts)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        missing = [] if ast.get_docstring(tree) is not None else ["<module>"]
        missing += _missing_in(tree.body, "")
        if missing:
            found[module] = missing
    return found


def test_every_public_definition_has_a_docstring():
    found = undocumented()
    total = sum(len(v) for v in found.values())
    lines = [f"{module}: {', '.join(names)}" for module, names in found.items()]
    assert not found, f"{total} public definitions without a docstring:\n" + "\n".join(lines)
