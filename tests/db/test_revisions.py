"""Telling whether a schema is current without alembic: the migration files read directly, one query for the
database's revision, and no alembic import on that path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory

from app.db.engine import create_database
from app.db.migrate import upgrade
from app.db.revisions import current_revision, head_revision, known_revisions
from app.paths import migrations_dir

REPO = Path(__file__).resolve().parents[2]


def test_the_migration_tree_read_from_the_files_is_alembics() -> None:
    """Same revisions in the same order, same head, as alembic's own script directory."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    script = ScriptDirectory.from_config(config)
    assert known_revisions() == [rev.revision for rev in reversed(list(script.walk_revisions()))]
    assert head_revision() == script.get_current_head()


async def test_current_revision_of_an_empty_and_an_upgraded_database(database_url: str, tmp_path: Path) -> None:
    """None for a database without the schema, the head after an upgrade (SQLite and MariaDB)."""
    empty = create_database(f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    db = create_database(database_url)
    try:
        assert await current_revision(empty) is None
        await upgrade(db)
        assert await current_revision(db) == head_revision()
    finally:
        await empty.dispose()
        await db.dispose()


def test_opening_a_current_database_does_not_import_alembic(tmp_path: Path) -> None:
    """The agent's start on a current schema checks it without loading alembic."""
    url = f"sqlite:///{tmp_path / 'farm.sqlite3'}"
    script = (
        "import asyncio, sys\n"
        "from app.db.engine import create_database\n"
        "from app.db.migrate import open_current_database\n"
        "async def main():\n"
        f"    db = await open_current_database({url!r})\n"
        "    await db.dispose()\n"
        "asyncio.run(main())\n"
        "print('alembic' in sys.modules)\n"
    )
    subprocess.run([sys.executable, "-m", "app", "db", "upgrade", "--database-url", url, "--data-dir",
                    str(tmp_path / "d")], check=True, capture_output=True, cwd=REPO)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
