"""Tables in the seed document's terms (types like `varchar(255)`, `enum('a','b')`, `json`), for `db check`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKeyConstraint, MetaData, Table, UniqueConstraint
from sqlalchemy.dialects import mysql
from sqlalchemy.sql import sqltypes
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.types import TypeEngine

from app.db.schema import is_addition


@dataclass(frozen=True)
class ColumnSpec:
    """One column, normalized: type, NULL-ness, default, AUTO_INCREMENT, ON UPDATE CURRENT_TIMESTAMP."""

    type: str
    nullable: bool = True
    default: str | None = None
    auto_increment: bool = False
    on_update: bool = False

    def render(self) -> str:
        """The column as DDL-like text."""
        parts = [self.type, "NULL" if self.nullable else "NOT NULL"]
        if self.default is not None:
            parts.append(f"DEFAULT {self.default}")
        if self.auto_increment:
            parts.append("AUTO_INCREMENT")
        if self.on_update:
            parts.append("ON UPDATE CURRENT_TIMESTAMP")
        return " ".join(parts)


@dataclass(frozen=True)
class IndexSpec:
    """A secondary index or unique key: its columns in order and whether it is unique."""

    columns: tuple[str, ...]
    unique: bool = False

    def render(self, name: str) -> str:
        """The index as DDL-like text."""
        kind = "UNIQUE KEY" if self.unique else "INDEX"
        return f"{kind} {name} ({', '.join(self.columns)})"


@dataclass(frozen=True)
class ForeignKeySpec:
    """A foreign key: columns -> referenced table(columns) with its ON DELETE / ON UPDATE rules."""

    columns: tuple[str, ...]
    ref_table: str
    ref_columns: tuple[str, ...]
    on_delete: str
    on_update: str = "NO ACTION"

    def render(self) -> str:
        """The foreign key as DDL-like text."""
        out = f"({', '.join(self.columns)}) -> {self.ref_table}({', '.join(self.ref_columns)}) ON DELETE {self.on_delete}"
        if self.on_update != "NO ACTION":
            out += f" ON UPDATE {self.on_update}"
        return out


@dataclass
class TableSpec:
    """One table: columns, primary key, indexes by name, foreign keys, JSON_VALID checks, other checks, options."""

    columns: dict[str, ColumnSpec] = field(default_factory=dict)
    primary_key: tuple[str, ...] = ()
    indexes: dict[str, IndexSpec] = field(default_factory=dict)  # by seed-style name (SQLite's unprefixed)
    index_names: dict[str, str] = field(default_factory=dict)  # seed-style name -> name in the database
    foreign_keys: list[tuple[str, ForeignKeySpec]] = field(default_factory=list)  # (constraint name, spec)
    json_checks: set[str] = field(default_factory=set)
    other_checks: list[str] = field(default_factory=list)
    engine: str | None = None
    charset: str | None = None
    collation: str | None = None
    added_indexes: set[str] = field(default_factory=set)


# --- normalization of each server's spellings --------------------------------------------------------


def enum_type(values: Any) -> str:
    """`enum('a','b')`, as MySQL's COLUMN_TYPE spells it."""
    return "enum(" + ",".join("'" + str(v).replace("'", "''") + "'" for v in values) + ")"


def type_name(type_: TypeEngine[Any]) -> str:
    """A column type in MySQL's lower-case spelling, without display width, character set or collation."""
    if isinstance(type_, sqltypes.Enum):
        return enum_type(type_.enums)
    out = type_.compile(dialect=mysql.dialect()).lower()
    out = re.sub(r"\s+(character set|collate)\s+\w+", "", out)
    return normalize_type(out)


def normalize_type(column_type: str) -> str:
    """MySQL and SQLite type spellings reduced to one: `int(11)`/`integer` -> `int`, `real` -> `float`."""
    out = re.sub(r"\s+", " ", column_type.strip().lower())
    out = re.sub(r"\s*([(),])\s*", r"\1", out)
    # MariaDB and MySQL 5.x show a display width (int(11)); MySQL 8 does not, and it means nothing.
    out = re.sub(r"^(tinyint|smallint|mediumint|int|integer|bigint)\(\d+\)", r"\1", out)
    return {"integer": "int", "real": "float"}.get(out, out)


def normalize_default(value: Any) -> str | None:
    """None for no default; CURRENT_TIMESTAMP however spelled; string literals unquoted."""
    if value is None:
        return None
    # SQLAlchemy's MySQL reflection leaves a column's ON UPDATE clause in its default; it is compared on its own.
    out = re.sub(r"\s+on\s+update\s+.*$", "", str(value).strip(), flags=re.IGNORECASE | re.DOTALL)
    # MariaDB reports a nullable column without a default as the word NULL; MySQL 8 as SQL NULL.
    if out.upper() == "NULL":
        return None
    while len(out) >= 2 and out[0] == "(" and out[-1] == ")":
        out = out[1:-1].strip()
    if re.fullmatch(r"(current_timestamp|now)(\(\))?", out, re.IGNORECASE):
        return "CURRENT_TIMESTAMP"
    if len(out) >= 2 and out[0] == out[-1] == "'":
        return out[1:-1].replace("''", "'")
    return out


def normalize_rule(rule: Any) -> str:
    """An ON DELETE/ON UPDATE rule; RESTRICT is NO ACTION."""
    rule = str(rule or "NO ACTION").strip().upper()
    # InnoDB treats RESTRICT and NO ACTION alike, and MariaDB and MySQL 8 report an unspecified rule differently.
    return "NO ACTION" if rule == "RESTRICT" else rule


def compact_clause(sql: str) -> str:
    """A CHECK clause with identifier quotes removed, whitespace collapsed and outer parentheses dropped."""
    out = re.sub(r"[`\"]", "", sql)
    out = re.sub(r"\s+", " ", out).strip()
    out = re.sub(r"\s*([(),])\s*", r"\1", out)
    while out.startswith("(") and out.endswith(")") and _balanced(out[1:-1]):
        out = out[1:-1].strip()
    return out


def _balanced(sql: str) -> bool:
    depth = 0
    for ch in sql:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


def json_checked_column(clause: str) -> str | None:
    """The column of `json_valid(col)` or `col IS NULL OR json_valid(col)`, else None."""
    norm = compact_clause(clause).lower()
    match = re.fullmatch(r"json_valid\((\w+)\)", norm)
    if match:
        return match.group(1)
    match = re.fullmatch(r"(\w+) is null or json_valid\((\w+)\)", norm) or re.fullmatch(
        r"json_valid\((\w+)\) or (\w+) is null", norm
    )
    if match and match.group(1) == match.group(2):
        return match.group(1)
    return None


_ENUM_CHECK = re.compile(r"(\w+) in\(((?:'(?:''|[^'])*',?)+)\)", re.IGNORECASE | re.DOTALL)
_STRING_LITERAL = re.compile(r"'((?:''|[^'])*)'")


def enum_check(clause: str) -> tuple[str, str] | None:
    """(column, enum(...)) for SQLite's `col IN ('a', 'b')` stand-in for an ENUM, else None."""
    match = _ENUM_CHECK.fullmatch(compact_clause(clause))
    if not match or match.group(2).endswith(","):
        return None
    values = [literal.replace("''", "'") for literal in _STRING_LITERAL.findall(match.group(2))]
    return match.group(1), enum_type(values)


# --- the expected side, from the metadata -----------------------------------------------------------


def _clause_text(clause: Any) -> str | None:
    """The SQL of a server default (or ON UPDATE) clause."""
    arg = getattr(clause, "arg", None)
    if isinstance(arg, str):
        return arg
    if isinstance(arg, TextClause):
        return arg.text
    return str(arg.compile(dialect=mysql.dialect())) if arg is not None else None


def expected_table(table: Table) -> TableSpec:
    """A metadata table in the seed's terms."""
    spec = TableSpec(
        primary_key=tuple(c.name for c in table.primary_key.columns),
        engine=table.kwargs.get("mysql_engine"),
        charset=table.kwargs.get("mysql_charset"),
    )
    for column in table.columns:
        spec.columns[column.name] = ColumnSpec(
            type=type_name(column.type),
            nullable=bool(column.nullable),
            default=normalize_default(_clause_text(column.server_default)),
            auto_increment=column is table.autoincrement_column,
            on_update=normalize_default(_clause_text(column.server_onupdate)) == "CURRENT_TIMESTAMP",
        )
    for index in sorted(table.indexes, key=lambda i: str(i.name)):
        lengths = index.dialect_options["mysql"]["length"] or {}
        columns = tuple(f"{c.name}({lengths[c.name]})" if c.name in lengths else c.name for c in index.columns)
        spec.indexes[str(index.name)] = IndexSpec(columns, bool(index.unique))
        if is_addition(index):
            spec.added_indexes.add(str(index.name))
    for constraint in table.constraints:
        if isinstance(constraint, UniqueConstraint) and constraint.name:
            spec.indexes[str(constraint.name)] = IndexSpec(tuple(c.name for c in constraint.columns), True)
        elif isinstance(constraint, ForeignKeyConstraint):
            spec.foreign_keys.append((str(constraint.name or ""), ForeignKeySpec(
                columns=tuple(c.name for c in constraint.columns),
                ref_table=constraint.elements[0].column.table.name,
                ref_columns=tuple(e.column.name for e in constraint.elements),
                on_delete=normalize_rule(constraint.ondelete),
                on_update=normalize_rule(constraint.onupdate),
            )))
        elif isinstance(constraint, CheckConstraint):
            clause = str(constraint.sqltext)
            column_name = json_checked_column(clause)
            if column_name is not None:
                spec.json_checks.add(column_name)
            else:
                spec.other_checks.append(compact_clause(clause))
    spec.foreign_keys.sort(key=lambda item: item[1].columns)
    spec.other_checks.sort()
    return spec


def expected_tables(metadata: MetaData) -> dict[str, tuple[TableSpec, bool]]:
    """Every table of the metadata in the seed's terms, with whether it is an addition."""
    return {name: (expected_table(table), is_addition(table)) for name, table in metadata.tables.items()}
