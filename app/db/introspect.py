"""The live schema of a database, in the seed's terms: SQLAlchemy's inspector plus the catalog it cannot read."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Inspector

from app.db.specs import (
    ColumnSpec,
    ForeignKeySpec,
    IndexSpec,
    TableSpec,
    enum_check,
    json_checked_column,
    normalize_default,
    normalize_rule,
    type_name,
)


def read_live_schema(conn: Connection) -> dict[str, TableSpec]:
    """Every base table of the connected database (run through AsyncConnection.run_sync)."""
    inspector = inspect(conn)
    catalog: _MysqlCatalog | _SqliteCatalog
    catalog = _MysqlCatalog.read(conn) if conn.dialect.name == "mysql" else _SqliteCatalog.read(conn)
    return {
        name: _read_table(inspector, name, catalog)
        for name in inspector.get_table_names()
        if not (isinstance(catalog, _SqliteCatalog) and name.startswith("sqlite_"))
    }


@dataclass(frozen=True)
class _MysqlCatalog:
    """What the inspector does not tell on MySQL/MariaDB: CHECK clauses with their level, ON UPDATE, engine, collation."""

    checks: list[tuple[str, str, str | None]]  # (table, clause, 'column'/'table'/None)
    on_update: set[tuple[str, str]]  # (table, column)
    options: dict[str, tuple[str | None, str | None]]  # table -> (engine, collation)

    @classmethod
    def read(cls, conn: Connection) -> _MysqlCatalog:
        """Query information_schema for the current database."""
        on_update = {
            (str(table), str(column))
            for table, column in _rows(
                conn,
                "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
                "AND LOWER(EXTRA) LIKE '%on update current_timestamp%'",
            )
        }
        options = {
            str(table): (engine, collation)
            for table, engine, collation in _rows(
                conn,
                "SELECT TABLE_NAME, ENGINE, TABLE_COLLATION FROM information_schema.TABLES "
                "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE'",
            )
        }
        return cls(_mysql_checks(conn), on_update, options)


@dataclass(frozen=True)
class _SqliteCatalog:
    """What the inspector does not tell on SQLite: AUTOINCREMENT, the triggers that stand for ON UPDATE, and the
    ON DELETE/ON UPDATE rules of inline `REFERENCES` clauses (the inspector reads them from FOREIGN KEY clauses only)."""

    autoincrement: set[str]  # tables
    on_update: set[tuple[str, str]]  # (table, column)
    fk_rules: dict[tuple[str, tuple[str, ...], str], tuple[str, str]]  # (table, columns, referenced) -> rules

    @classmethod
    def read(cls, conn: Connection) -> _SqliteCatalog:
        """Read sqlite_master."""
        autoincrement = {
            str(name)
            for name, sql in _rows(conn, "SELECT name, sql FROM sqlite_master WHERE type = 'table'")
            if re.search(r"\bautoincrement\b", str(sql or ""), re.IGNORECASE)
        }
        on_update = set()
        for trigger, table, sql in _rows(conn, "SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'trigger'"):
            column = _on_update_column(str(table), str(trigger), str(sql or ""))
            if column is not None:
                on_update.add((str(table), column))
        grouped: dict[tuple[str, int], list[tuple[Any, ...]]] = {}
        for row in _rows(
            conn,
            "SELECT m.name, f.id, f.seq, f.\"table\", f.\"from\", f.on_update, f.on_delete FROM sqlite_master m "
            "JOIN pragma_foreign_key_list(m.name) f WHERE m.type = 'table' ORDER BY m.name, f.id, f.seq",
        ):
            grouped.setdefault((str(row[0]), int(row[1])), []).append(row)
        fk_rules = {
            (table, tuple(str(r[4]) for r in rows), str(rows[0][3])): (str(rows[0][6]), str(rows[0][5]))
            for (table, _), rows in grouped.items()
        }
        return cls(autoincrement, on_update, fk_rules)


def _rows(conn: Connection, sql: str) -> list[tuple[Any, ...]]:
    return [tuple(v.decode() if isinstance(v, (bytes, bytearray)) else v for v in row)
            for row in conn.execute(text(sql)).all()]


def _mysql_checks(conn: Connection) -> list[tuple[str, str, str | None]]:
    """(table, check clause, 'column'/'table'/None) for every CHECK constraint of the current database."""
    info_columns = {
        str(row[0]).upper()
        for row in _rows(
            conn,
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = 'information_schema' AND TABLE_NAME = 'CHECK_CONSTRAINTS'",
        )
    }
    # MariaDB's check names are unique per table only (CONSTRAINT_1 in each), so it must also match
    # TABLE_NAME; MySQL 8 has no TABLE_NAME there (its names are unique per schema) and no LEVEL.
    on_table = " AND cc.TABLE_NAME = tc.TABLE_NAME" if "TABLE_NAME" in info_columns else ""
    level = "cc.LEVEL" if "LEVEL" in info_columns else "NULL"
    rows = _rows(
        conn,
        f"SELECT tc.TABLE_NAME, cc.CHECK_CLAUSE, {level} "
        "FROM information_schema.TABLE_CONSTRAINTS tc "
        "JOIN information_schema.CHECK_CONSTRAINTS cc ON cc.CONSTRAINT_SCHEMA = tc.CONSTRAINT_SCHEMA "
        f"AND cc.CONSTRAINT_NAME = tc.CONSTRAINT_NAME{on_table} "
        "WHERE tc.TABLE_SCHEMA = DATABASE() AND tc.CONSTRAINT_TYPE = 'CHECK' "
        "ORDER BY tc.TABLE_NAME, tc.CONSTRAINT_NAME",
    )
    return [(str(table), str(clause), str(lvl).lower() if lvl else None) for table, clause, lvl in rows]


def _on_update_column(table: str, trigger: str, trigger_sql: str) -> str | None:
    """The column a `<table>_on_update_<column>` trigger sets to CURRENT_TIMESTAMP (the migration's ON UPDATE)."""
    column = trigger.removeprefix(f"{table}_on_update_")
    if column == trigger:
        return None
    pattern = rf"\bset\s+[`\"]?{re.escape(column)}[`\"]?\s*=\s*current_timestamp\b"
    return column if re.search(pattern, trigger_sql, re.IGNORECASE) else None


def _read_table(inspector: Inspector, name: str, catalog: _MysqlCatalog | _SqliteCatalog) -> TableSpec:
    live = TableSpec(primary_key=tuple(inspector.get_pk_constraint(name).get("constrained_columns") or ()))
    if isinstance(catalog, _MysqlCatalog):
        live.engine, live.collation = catalog.options.get(name, (None, None))
        checks = [(clause, level) for table, clause, level in catalog.checks if table == name]
    else:
        checks = [(str(ck["sqltext"]), None) for ck in inspector.get_check_constraints(name)]
    enums: dict[str, str] = {}
    json_columns: set[str] = set()
    for clause, level in checks:
        column = json_checked_column(clause)
        enum = enum_check(clause) if isinstance(catalog, _SqliteCatalog) else None
        if column is not None:
            json_columns.add(column)
            # MariaDB adds a column-level json_valid check to every JSON column: that is its type, not a seed CHECK.
            if level != "column":
                live.json_checks.add(column)
        elif enum is not None:
            enums[enum[0]] = enum[1]  # SQLite's stand-in for an ENUM
        else:
            live.other_checks.append(clause)
    _read_columns(inspector, name, catalog, live, enums, json_columns)
    _read_indexes(inspector, name, live, prefixed=isinstance(catalog, _SqliteCatalog))
    _read_foreign_keys(inspector, name, catalog, live)
    return live


def _read_columns(inspector: Inspector, name: str, catalog: _MysqlCatalog | _SqliteCatalog, live: TableSpec,
                  enums: dict[str, str], json_columns: set[str]) -> None:
    for column in inspector.get_columns(name):
        column_name = str(column["name"])
        type_ = enums.get(column_name) or type_name(column["type"])
        if column_name in json_columns and type_ in ("longtext", "text", "json"):
            type_ = "json"  # MariaDB's JSON is LONGTEXT with json_valid; SQLite's is TEXT with json_valid
        int_pk = live.primary_key == (column_name,) and type_ == "int"
        if isinstance(catalog, _MysqlCatalog):
            auto_increment, rowid = column.get("autoincrement") is True, False
        else:
            # SQLite's INTEGER PRIMARY KEY is the rowid, which cannot be NULL although the catalog says it may.
            auto_increment, rowid = int_pk and name in catalog.autoincrement, int_pk
        live.columns[column_name] = ColumnSpec(
            type=type_,
            nullable=bool(column["nullable"]) and not rowid,
            default=normalize_default(column.get("default")),
            auto_increment=auto_increment,
            on_update=(name, column_name) in catalog.on_update,
        )


def _read_indexes(inspector: Inspector, name: str, live: TableSpec, *, prefixed: bool) -> None:
    for index in inspector.get_indexes(name):
        physical = str(index["name"])
        # SQLite index names are global, so the migrations prefix each with its table.
        normalized = physical.removeprefix(f"{name}_") if prefixed else physical
        lengths = (index.get("dialect_options") or {}).get("mysql_length") or {}
        columns = tuple(
            "(expression)" if c is None else f"{c}({lengths[c]})" if isinstance(lengths, dict) and c in lengths else c
            for c in index["column_names"]
        )
        live.indexes[normalized] = IndexSpec(columns, bool(index["unique"]))
        live.index_names[normalized] = physical
    for unique in inspector.get_unique_constraints(name):
        physical = str(unique.get("name") or "")
        if physical and physical not in live.index_names.values():
            live.indexes[physical] = IndexSpec(tuple(unique["column_names"]), True)
            live.index_names[physical] = physical


def _read_foreign_keys(inspector: Inspector, name: str, catalog: _MysqlCatalog | _SqliteCatalog,
                       live: TableSpec) -> None:
    for i, fk in enumerate(inspector.get_foreign_keys(name)):
        on_delete, on_update = (fk.get("options") or {}).get("ondelete"), (fk.get("options") or {}).get("onupdate")
        if isinstance(catalog, _SqliteCatalog):
            key = (name, tuple(fk["constrained_columns"]), str(fk["referred_table"]))
            on_delete, on_update = catalog.fk_rules.get(key, ("NO ACTION", "NO ACTION"))
        live.foreign_keys.append((str(fk.get("name") or f"fk#{i}"), ForeignKeySpec(
            columns=tuple(fk["constrained_columns"]),
            ref_table=str(fk["referred_table"]),
            ref_columns=tuple(fk["referred_columns"]),
            on_delete=normalize_rule(on_delete),
            on_update=normalize_rule(on_update),
        )))
