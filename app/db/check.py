"""`aifarm db check`: compare a database's live schema with app/db/schema.py and list every difference."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import MetaData

from app.db import schema
from app.db.engine import Database
from app.db.introspect import read_live_schema
from app.db.specs import ForeignKeySpec, IndexSpec, TableSpec, compact_clause, expected_tables


@dataclass(frozen=True)
class SchemaReport:
    """What `db check` found: differences from the schema (empty when it matches) and the documented additions."""

    differences: list[str]
    additions: list[str]


async def check_schema(db: Database, metadata: MetaData | None = None) -> SchemaReport:
    """Compare the live schema of `db` with `metadata` (app/db/schema.py's by default) and report every difference."""
    async with db.connect() as conn:
        live = await conn.run_sync(read_live_schema)
    return compare_schema(live, schema.metadata if metadata is None else metadata, mysql=db.dialect == "mysql")


def compare_schema(live: dict[str, TableSpec], metadata: MetaData, *, mysql: bool) -> SchemaReport:
    """Every difference between live tables and the metadata's; additions present in the database are listed."""
    differences: list[str] = []
    added_tables: list[str] = []
    added_indexes: list[str] = []
    for name, (spec, addition) in expected_tables(metadata).items():
        if name not in live:
            # A database made from the seed's own DDL has none of the additions, and that is not a difference.
            if not addition:
                differences.append(f"table {name}: missing (expected by the seed schema)")
            continue
        if addition:
            added_tables.append(f"table {name}")
        differences.extend(_compare_table(name, spec, live[name], mysql=mysql))
        for index in sorted(spec.added_indexes):
            if index in live[name].indexes:
                physical = live[name].index_names.get(index, index)
                added_indexes.append(f"index {name}.{physical} ({', '.join(live[name].indexes[index].columns)})")
    return SchemaReport(differences=differences, additions=sorted(added_tables) + sorted(added_indexes))


def _flag(value: bool) -> str:
    return "yes" if value else "no"


def _compare_table(name: str, spec: TableSpec, live: TableSpec, *, mysql: bool) -> list[str]:
    where = f"table {name}:"
    out = _compare_columns(where, spec, live)
    if live.primary_key != spec.primary_key:
        actual_pk = f"({', '.join(live.primary_key)})" if live.primary_key else "none"
        out.append(f"{where} primary key: expected ({', '.join(spec.primary_key)}), actual {actual_pk}")
    out.extend(_compare_indexes(where, spec, live))
    out.extend(_compare_foreign_keys(where, spec, live))
    out.extend(_compare_checks(where, spec, live))
    if mysql:
        if spec.engine and (live.engine or "").lower() != spec.engine.lower():
            out.append(f"{where} engine: expected {spec.engine}, actual {live.engine or 'none'}")
        if spec.charset and not (live.collation or "").lower().startswith(f"{spec.charset.lower()}_"):
            out.append(f"{where} collation: expected a {spec.charset} collation, actual {live.collation or 'none'}")
    return out


def _compare_columns(where: str, spec: TableSpec, live: TableSpec) -> list[str]:
    out: list[str] = []
    for column, expected in spec.columns.items():
        actual = live.columns.get(column)
        if actual is None:
            out.append(f"{where} column {column} missing (expected {expected.render()})")
            continue
        if actual.type != expected.type:
            out.append(f"{where} column {column} type: expected {expected.type}, actual {actual.type}")
        if actual.nullable != expected.nullable:
            exp, act = ("NULL", "NOT NULL") if expected.nullable else ("NOT NULL", "NULL")
            out.append(f"{where} column {column} nullability: expected {exp}, actual {act}")
        if actual.default != expected.default:
            out.append(
                f"{where} column {column} default: expected {expected.default or 'none'}, actual {actual.default or 'none'}"
            )
        if actual.auto_increment != expected.auto_increment:
            out.append(
                f"{where} column {column} auto_increment: expected {_flag(expected.auto_increment)}, "
                f"actual {_flag(actual.auto_increment)}"
            )
        if actual.on_update != expected.on_update:
            out.append(
                f"{where} column {column} ON UPDATE CURRENT_TIMESTAMP: expected {_flag(expected.on_update)}, "
                f"actual {_flag(actual.on_update)}"
            )
    for column, actual in live.columns.items():
        if column not in spec.columns:
            out.append(f"{where} unexpected column {column} ({actual.render()})")
    return out


def _compare_indexes(where: str, spec: TableSpec, live: TableSpec) -> list[str]:
    out: list[str] = []
    for index, expected in spec.indexes.items():
        found = live.indexes.get(index)
        if found is None:
            if index not in spec.added_indexes:
                out.append(f"{where} index {index} missing (expected {expected.render(index)})")
        elif found != expected:
            out.append(
                f"{where} index {index}: expected {expected.render(index)}, actual {found.render(live.index_names[index])}"
            )
    fk_columns = {fk.columns: constraint for constraint, fk in live.foreign_keys}
    fk_columns.update({fk.columns: "" for _, fk in spec.foreign_keys if fk.columns not in fk_columns})
    for index, found in sorted(live.indexes.items()):
        if index in spec.indexes or _is_implicit_fk_index(index, found, fk_columns):
            continue
        physical = live.index_names.get(index, index)
        out.append(f"{where} unexpected index {physical}: {found.render(physical)}")
    return out


def _is_implicit_fk_index(name: str, index: IndexSpec, fk_columns: dict[tuple[str, ...], str]) -> bool:
    """True for the index InnoDB adds for a foreign key (or the migration's SQLite `fk_<col>` equivalent)."""
    if index.unique or index.columns not in fk_columns:
        return False
    constraint = fk_columns[index.columns]
    first = re.escape(index.columns[0])
    joined = re.escape("_".join(index.columns))
    return name == constraint or bool(re.fullmatch(rf"(?:{first}|fk_{joined})(?:_\d+)?", name))


def _compare_foreign_keys(where: str, spec: TableSpec, live: TableSpec) -> list[str]:
    out: list[str] = []
    remaining: list[tuple[str, ForeignKeySpec]] = list(live.foreign_keys)
    for _, expected in spec.foreign_keys:
        same = [item for item in remaining if item[1] == expected]
        similar = same or [item for item in remaining if item[1].columns == expected.columns]
        if not similar:
            out.append(f"{where} foreign key ({', '.join(expected.columns)}) missing (expected {expected.render()})")
            continue
        remaining.remove(similar[0])
        if not same:
            out.append(
                f"{where} foreign key ({', '.join(expected.columns)}) {similar[0][0]}: "
                f"expected {expected.render()}, actual {similar[0][1].render()}"
            )
    for constraint, fk in remaining:
        out.append(f"{where} unexpected foreign key {constraint}: {fk.render()}")
    return out


def _compare_checks(where: str, spec: TableSpec, live: TableSpec) -> list[str]:
    out = [f"{where} CHECK (JSON_VALID({column})) missing" for column in sorted(spec.json_checks - live.json_checks)]
    out.extend(f"{where} unexpected CHECK (JSON_VALID({column}))" for column in sorted(live.json_checks - spec.json_checks))
    live_clauses = {compact_clause(clause) for clause in live.other_checks}
    out.extend(f"{where} CHECK ({clause}) missing" for clause in spec.other_checks if clause not in live_clauses)
    out.extend(
        f"{where} unexpected CHECK ({clause})"
        for clause in live.other_checks
        if compact_clause(clause) not in spec.other_checks
    )
    return out
