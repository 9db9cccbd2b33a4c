"""Where the bundled templates/ and static/ live: in a wheel, an editable install or a checkout."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _bundled(name: str) -> Path:
    for candidate in (_PACKAGE / "_bundled" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"AI Farm's {name}/ directory is missing next to {_PACKAGE}")


def templates_dir() -> Path:
    """The directory of the jinja2 templates."""
    return _bundled("templates")


def static_dir() -> Path:
    """The directory of the static assets (css, js, img)."""
    return _bundled("static")


def migrations_dir() -> Path:
    """The alembic script directory."""
    return _PACKAGE / "db" / "migrations"
