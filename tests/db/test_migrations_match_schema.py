"""The migrations build exactly app/db/schema.py: alembic's autogenerate comparison finds nothing to change."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Index, MetaData, String, Table, text
from sqlalchemy.engine import Connection
from sqlalchemy.sql import sqltypes

from app.db.engine import Database
from app.db.schema import metadata

Diff = tuple[Any, ...]


def _flatten(diffs: list[Any]) -> list[Diff]:
    """compare_metadata's answer, column changes (lists of tuples) flattened."""
    out: list[Diff] = []
    for diff in diffs:
        out.extend(diff if isinstance(diff, list) else [diff])
    return out


def _metadata_index(index: Index) -> tuple[tuple[str, ...], bool]:
    """A metadata index's columns (with DESC where it has it) and uniqueness, whatever its name."""
    return tuple(str(e).split(".", 1)[-1].lower() for e in index.expressions), bool(index.unique)


def _sqlite_index(conn: Connection, index: Index) -> tuple[tuple[str, ...], bool]:
    """A reflected SQLite index in the same terms, its sort order read from SQLite's catalog."""
    rows = conn.execute(
        text("SELECT name, \"desc\" FROM pragma_index_xinfo(:i) WHERE key = 1 ORDER BY seqno"), {"i": index.name}
    ).all()
    return tuple(f"{name.lower()} desc" if desc else name.lower() for name, desc in rows), bool(index.unique)


def _sqlite_fk_rules(conn: Connection, table: str) -> dict[tuple[tuple[str, ...], str], str]:
    """(columns, referenced table) -> ON DELETE rule, from SQLite's own catalog."""
    grouped: dict[int, list[Any]] = {}
    for row in conn.execute(text('SELECT id, seq, "table", "from", on_delete FROM pragma_foreign_key_list(:t)'), {"t": table}):
        grouped.setdefault(row[0], []).append(row)
    return {
        (tuple(r[3] for r in sorted(rows, key=lambda r: r[1])), rows[0][2]): rows[0][4] for rows in grouped.values()
    }


def _without_sqlite_noise(conn: Connection, diffs: list[Diff]) -> list[Diff]:
    """The differences that remain once those which only SQLite's spelling of the same schema makes are set aside."""
    kept: list[Diff] = []
    added_indexes = {(d[1].table.name, d[1].name): d[1] for d in diffs if d[0] == "add_index"}
    matched_indexes: set[tuple[str, str]] = set()
    added_fks = [d[1] for d in diffs if d[0] == "add_fk"]
    for diff in diffs:
        kind = diff[0]
        if kind == "modify_type" and isinstance(diff[-1], sqltypes.JSON) and isinstance(diff[-2], sqltypes.Text):
            continue  # SQLite has no JSON type: JSON lives in TEXT with CHECK (json_valid(...)), which `db check` compares.
        if kind == "modify_type" and isinstance(diff[-1], sqltypes.Float) and isinstance(diff[-2], sqltypes.REAL):
            continue  # REAL is SQLite's only floating-point type; FLOAT is stored as the same REAL.
        if kind == "modify_nullable" and diff[-2] is True and diff[-1] is False:
            table = metadata.tables[diff[2]]
            if [c.name for c in table.primary_key.columns] == [diff[3]] and table.c[diff[3]].type._type_affinity is sqltypes.Integer:
                continue  # INTEGER PRIMARY KEY is the rowid, never NULL, though PRAGMA table_info says notnull=0.
        if kind == "remove_index":
            index = diff[1]
            table = index.table.name
            name = str(index.name).removeprefix(f"{table}_")
            expected = added_indexes.get((table, name))
            # SQLite index names are global, so the migration prefixes each seed index name with its table (and
            # SQLAlchemy's SQLite reflection drops DESC, so the columns are read from the catalog).
            if (
                str(index.name).startswith(f"{table}_")
                and expected is not None
                and _metadata_index(expected) == _sqlite_index(conn, index)
            ):
                matched_indexes.add((table, name))
                continue
            fk_columns = {tuple(c.name for c in fk.columns) for fk in metadata.tables[table].foreign_key_constraints}
            columns = tuple(c.name for c in index.columns)
            if name == "fk_" + "_".join(columns) and columns in fk_columns and not index.unique:
                continue  # the index InnoDB creates implicitly for a foreign key, created explicitly on SQLite
        if kind in ("remove_fk", "add_fk") and _same_fk_with_rules_in_catalog(conn, diff[1], added_fks):
            # SQLAlchemy's SQLite reflection reads ON DELETE only from table-level FOREIGN KEY clauses, not from the
            # migration's inline REFERENCES; the rule is compared here with PRAGMA foreign_key_list instead.
            continue
        kept.append(diff)
    return [d for d in kept if not (d[0] == "add_index" and (d[1].table.name, d[1].name) in matched_indexes)]


def _same_fk_with_rules_in_catalog(conn: Connection, fk: Any, added_fks: list[Any]) -> bool:
    """True when the reflected `fk` and a metadata foreign key differ only in a rule the catalog has right."""
    table = fk.table.name
    columns = tuple(c.name for c in fk.columns)
    referred = fk.elements[0].target_fullname.split(".")[0]
    expected = [
        m for m in added_fks
        if m.table.name == table and tuple(c.name for c in m.columns) == columns
        and m.elements[0].target_fullname.split(".")[0] == referred
    ]
    if not expected:
        return False
    actual_rule = _sqlite_fk_rules(conn, table).get((columns, referred), "NO ACTION")
    return actual_rule.upper() == (expected[0].ondelete or "NO ACTION").upper()


def _is_on_update_in_default(diff: Diff, target: MetaData) -> bool:
    """MySQL reports `ON UPDATE CURRENT_TIMESTAMP` inside the column's default, and alembic compares it as part of the
    default; schema.py states it as the column's server_onupdate (which `db check` compares on its own)."""
    if diff[0] != "modify_default" or diff[-2] is None:
        return False
    column = target.tables[diff[2]].c[diff[3]]
    if column.server_default is None or column.server_onupdate is None:
        return False
    spelled = str(diff[-2].arg.text if hasattr(diff[-2].arg, "text") else diff[-2].arg).lower().replace("()", "")
    return spelled == "current_timestamp on update current_timestamp" == (
        f"{column.server_default.arg.text} on update {column.server_onupdate.arg.text}".lower()  # type: ignore[union-attr]
    )


def _autogenerate_diffs(sync_conn: Connection, target: MetaData) -> list[Diff]:
    context = MigrationContext.configure(sync_conn, opts={"compare_type": True, "compare_server_default": True})
    diffs = [d for d in _flatten(compare_metadata(context, target)) if not _is_on_update_in_default(d, target)]
    if sync_conn.dialect.name == "sqlite":
        diffs = _without_sqlite_noise(sync_conn, diffs)
    return diffs


async def test_migrations_build_the_schema_module(db: Database) -> None:
    async with db.connect() as conn:
        diffs = await conn.run_sync(_autogenerate_diffs, metadata)
    assert diffs == []


async def test_a_schema_module_change_is_a_difference(db: Database) -> None:
    changed = MetaData()
    for table in metadata.tables.values():
        table.to_metadata(changed)
    changed.tables["clients"].c.version.type = String(40)
    Table("node_stats", changed, Column("id", String(10), primary_key=True))
    async with db.connect() as conn:
        diffs = await conn.run_sync(_autogenerate_diffs, changed)
    kinds = sorted((d[0], d[2] if d[0].startswith("modify_") else d[1].name) for d in diffs)
    assert kinds == [("add_table", "node_stats"), ("modify_type", "clients")], diffs
