"""The shape of the code: data flows one way (nothing below the command line imports the agent), and functions
stay short enough to read."""

from __future__ import annotations

import ast
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "app"
COMMAND_LINE = {"cli.py", "commands.py", "tray.py"}
MAX_FUNCTION_LINES = 60


def _modules() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text(encoding="utf-8"))) for path in sorted(APP.rglob("*.py"))]


def _imports_agent(tree: ast.Module) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "app.agent":
            return True
        if isinstance(node, ast.ImportFrom) and node.module == "app" and any(a.name == "agent" for a in node.names):
            return True
        if isinstance(node, ast.Import) and any(a.name == "app.agent" for a in node.names):
            return True
    return False


def test_only_the_command_line_imports_the_agent() -> None:
    """The composition root is seen by the command line alone; every other module gets narrow services."""
    importers = sorted(str(path.relative_to(APP)) for path, tree in _modules() if _imports_agent(tree))
    assert importers and set(importers) <= COMMAND_LINE, importers


def test_no_function_is_longer_than_sixty_lines() -> None:
    """Every function and method in app/ fits on a screen."""
    long = [f"{path.relative_to(APP)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path, tree in _modules() for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno is not None
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == []
