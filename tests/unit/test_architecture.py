"""What the import contracts (pyproject.toml, `make lint`) cannot see, checked on the source itself.

docs/architecture.md: no module reaches into another's private names, and views and API handlers never touch
the session (services and the unit of work do).
"""
from __future__ import annotations

import ast
import functools
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "pharmacy"


@functools.cache
def _modules() -> list[tuple[Path, ast.Module]]:
    """Every module of the package, parsed once for all the checks here (a few seconds of parsing each)."""
    return [(path, ast.parse(path.read_text())) for path in sorted(PACKAGE.rglob("*.py"))]


def _views() -> list[tuple[Path, ast.Module]]:
    return [(path, tree) for path, tree in _modules() if path.name in ("views.py", "api.py", "admin_views.py")]


def test_no_private_name_is_imported_across_modules() -> None:
    offenders = []
    for path, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pharmacy"):
                offenders += [f"{path.relative_to(PACKAGE.parent)}: {node.module}.{alias.name}"
                              for alias in node.names if alias.name.startswith("_")]
    assert offenders == []


def test_views_and_api_handlers_never_touch_the_session_or_check_permissions() -> None:
    offenders = []
    for path, tree in _views():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "session" and \
                    isinstance(node.value, ast.Name) and node.value.id == "db":
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} db.session")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "require":
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} a permission check")
    assert offenders == []


def test_the_import_contracts_are_part_of_make_lint() -> None:
    makefile = (PACKAGE.parent / "Makefile").read_text()
    assert "lint-imports" in makefile
    assert "[tool.importlinter]" in (PACKAGE.parent / "pyproject.toml").read_text()
