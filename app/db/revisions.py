"""The migration tree read from the migration files themselves, and the database's revision read with one query:
enough to tell whether a schema is current without importing alembic (which costs a tenth of a second at start)."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import inspect, text

from app.db.engine import Database
from app.paths import migrations_dir

REVISION = re.compile(r"^revision(?:\s*:[^=]*)?\s*=\s*[\"']([^\"']+)[\"']", re.MULTILINE)
DOWN_REVISION = re.compile(r"^down_revision(?:\s*:[^=]*)?\s*=\s*(?:[\"']([^\"']+)[\"']|None)", re.MULTILINE)


@lru_cache(maxsize=4)
def _tree(folder: Path) -> tuple[tuple[str, str | None], ...]:
    pairs = []
    for path in sorted((folder / "versions").glob("*.py")):
        source = path.read_text(encoding="utf-8")
        revision, down = REVISION.search(source), DOWN_REVISION.search(source)
        if revision is not None and down is not None:
            pairs.append((revision.group(1), down.group(1)))
    return tuple(pairs)


def known_revisions(folder: Path | None = None) -> list[str]:
    """Every revision of the migration tree, oldest first (a single line of revisions)."""
    parents = dict(_tree(folder or migrations_dir()))
    children = {down: rev for rev, down in parents.items()}
    order, current = [], children.get(None)
    while current is not None:
        order.append(current)
        current = children.get(current)
    return order


def head_revision(folder: Path | None = None) -> str:
    """The newest schema revision this version of AI Farm knows."""
    order = known_revisions(folder)
    assert order, "no migrations found"
    return order[-1]


async def current_revision(db: Database) -> str | None:
    """The revision the database is at, or None when it has no AI Farm schema."""
    def read(sync: Any) -> str | None:
        if not inspect(sync).has_table("alembic_version"):
            return None
        value = sync.execute(text("SELECT version_num FROM alembic_version")).scalar()
        return str(value) if value is not None else None

    async with db.connect() as conn:
        return await conn.run_sync(read)
