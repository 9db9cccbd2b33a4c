"""`aifarm db check`: compare a database's live schema to the seed document's and list every difference."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, TypedDict

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db.engine import Database


@dataclass(frozen=True)
class SchemaReport:
    """What `db check` found: differences from the seed (empty when it matches) and known product additions."""

    differences: list[str]
    additions: list[str]


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


@dataclass(frozen=True)
class TableSpec:
    """One seed table: columns, primary key, named indexes, foreign keys and the columns it CHECKs with JSON_VALID."""

    columns: dict[str, ColumnSpec]
    primary_key: tuple[str, ...]
    indexes: dict[str, IndexSpec]
    foreign_keys: tuple[ForeignKeySpec, ...] = ()
    json_checks: frozenset[str] = frozenset()


def _enum(*values: str) -> str:
    return "enum(" + ",".join("'" + v.replace("'", "''") + "'" for v in values) + ")"


_ID = ColumnSpec("int", nullable=False, auto_increment=True)

# Transcribed from tests/data/ai-farm-schema.md, in the document's order; a PRIMARY KEY column is NOT NULL.
EXPECTED: dict[str, TableSpec] = {
    "tasks": TableSpec(
        columns={
            "id": _ID,
            "type": ColumnSpec("varchar(255)", nullable=False),
            "requirements": ColumnSpec("json", nullable=False),
            "status": ColumnSpec(_enum("pending", "running", "completed", "failed", "error"), nullable=False),
            "client_id": ColumnSpec("varchar(255)"),
            "created_at": ColumnSpec("datetime", nullable=False),
            "updated_at": ColumnSpec("datetime", nullable=False),
            "result": ColumnSpec("json"),
            "error_log": ColumnSpec("text"),
            "priority": ColumnSpec("int", default="0"),
            "config": ColumnSpec("json"),
            "checkpoint_path": ColumnSpec("varchar(255)"),
        },
        primary_key=("id",),
        indexes={
            "idx_status": IndexSpec(("status",)),
            "idx_priority": IndexSpec(("priority",)),
            "idx_created_at": IndexSpec(("created_at",)),
        },
        foreign_keys=(ForeignKeySpec(("client_id",), "clients", ("id",), "SET NULL"),),
        json_checks=frozenset({"requirements", "config", "result"}),
    ),
    "task_assignments": TableSpec(
        columns={
            "id": _ID,
            "task_id": ColumnSpec("int", nullable=False),
            "client_id": ColumnSpec("varchar(255)", nullable=False),
            "assigned_at": ColumnSpec("datetime", nullable=False, default="CURRENT_TIMESTAMP"),
            "updated_at": ColumnSpec("datetime", nullable=False, default="CURRENT_TIMESTAMP", on_update=True),
            "status": ColumnSpec(_enum("assigned", "training", "completed", "failed"), nullable=False),
            "rank": ColumnSpec("int", nullable=False),
            "checkpoint_path": ColumnSpec("varchar(255)"),
            "metrics": ColumnSpec("json"),
        },
        primary_key=("id",),
        indexes={
            "idx_task_status": IndexSpec(("task_id", "status")),
            "idx_client_status": IndexSpec(("client_id", "status")),
            "unique_assignment": IndexSpec(("task_id", "rank"), unique=True),
        },
        foreign_keys=(
            ForeignKeySpec(("task_id",), "tasks", ("id",), "CASCADE"),
            ForeignKeySpec(("client_id",), "clients", ("id",), "CASCADE"),
        ),
        json_checks=frozenset({"metrics"}),
    ),
    "clients": TableSpec(
        columns={
            "id": ColumnSpec("varchar(255)", nullable=False),
            "cpu_info": ColumnSpec("json", nullable=False),
            "ram_info": ColumnSpec("json", nullable=False),
            "gpu_info": ColumnSpec("json"),
            "session_info": ColumnSpec("json"),
            "last_seen": ColumnSpec("datetime", nullable=False),
            "status": ColumnSpec(_enum("active", "inactive"), nullable=False),
            "version": ColumnSpec("varchar(50)"),
            "hostname": ColumnSpec("varchar(255)"),
        },
        primary_key=("id",),
        indexes={
            "idx_status": IndexSpec(("status",)),
            "idx_last_seen": IndexSpec(("last_seen",)),
        },
        json_checks=frozenset({"cpu_info", "ram_info", "gpu_info", "session_info"}),
    ),
    "checkpoints": TableSpec(
        columns={
            "id": _ID,
            "task_id": ColumnSpec("int", nullable=False),
            "client_id": ColumnSpec("varchar(255)"),
            "path": ColumnSpec("varchar(255)", nullable=False),
            "type": ColumnSpec(_enum("regular", "distributed", "emergency", "final"), nullable=False),
            "metrics": ColumnSpec("json"),
            "created_at": ColumnSpec("datetime", nullable=False),
        },
        primary_key=("id",),
        indexes={"idx_task_type": IndexSpec(("task_id", "type"))},
        foreign_keys=(
            ForeignKeySpec(("task_id",), "tasks", ("id",), "CASCADE"),
            ForeignKeySpec(("client_id",), "clients", ("id",), "SET NULL"),
        ),
        json_checks=frozenset({"metrics"}),
    ),
    "model_versions": TableSpec(
        columns={
            "id": _ID,
            "name": ColumnSpec("varchar(255)", nullable=False),
            "version": ColumnSpec("varchar(50)", nullable=False),
            "url": ColumnSpec("text", nullable=False),
            "config": ColumnSpec("json"),
            "hash": ColumnSpec("varchar(64)"),
            "created_at": ColumnSpec("datetime", nullable=False),
        },
        primary_key=("id",),
        indexes={
            "unique_version": IndexSpec(("name", "version"), unique=True),
            "idx_name_version": IndexSpec(("name", "version")),
        },
        json_checks=frozenset({"config"}),
    ),
    "task_logs": TableSpec(
        columns={
            "id": _ID,
            "task_id": ColumnSpec("int"),
            "client_id": ColumnSpec("varchar(255)"),
            "log_type": ColumnSpec(_enum("info", "warning", "error"), nullable=False),
            "message": ColumnSpec("text", nullable=False),
            "created_at": ColumnSpec("datetime", nullable=False),
        },
        primary_key=("id",),
        indexes={
            "idx_task_time": IndexSpec(("task_id", "created_at")),
            "idx_client_time": IndexSpec(("client_id", "created_at")),
        },
        foreign_keys=(
            ForeignKeySpec(("task_id",), "tasks", ("id",), "CASCADE"),
            ForeignKeySpec(("client_id",), "clients", ("id",), "CASCADE"),
        ),
    ),
    "client_logs": TableSpec(
        columns={
            "id": _ID,
            "client_id": ColumnSpec("varchar(255)"),
            "log_type": ColumnSpec(_enum("info", "warning", "error"), nullable=False),
            "message": ColumnSpec("text", nullable=False),
            "created_at": ColumnSpec("datetime", nullable=False),
        },
        primary_key=("id",),
        indexes={"idx_client_time": IndexSpec(("client_id", "created_at"))},
        foreign_keys=(ForeignKeySpec(("client_id",), "clients", ("id",), "CASCADE"),),
    ),
    "performance_metrics": TableSpec(
        columns={
            "id": _ID,
            "client_id": ColumnSpec("varchar(255)", nullable=False),
            "task_id": ColumnSpec("int"),
            "metric_type": ColumnSpec("varchar(50)", nullable=False),
            "value": ColumnSpec("float", nullable=False),
            "recorded_at": ColumnSpec("datetime", nullable=False),
        },
        primary_key=("id",),
        indexes={
            "idx_client_time": IndexSpec(("client_id", "recorded_at")),
            "idx_task_time": IndexSpec(("task_id", "recorded_at")),
        },
        foreign_keys=(
            ForeignKeySpec(("client_id",), "clients", ("id",), "CASCADE"),
            ForeignKeySpec(("task_id",), "tasks", ("id",), "CASCADE"),
        ),
    ),
}

EXPECTED_ENGINE = "InnoDB"
EXPECTED_CHARSET = "utf8mb4"


class Additions(TypedDict):
    """Product additions to the seed schema that `db check` lists as information, not differences."""

    tables: set[str]
    indexes: dict[str, set[str]]


# Extended by later migrations: tables, and per table the seed-style (unprefixed) names of added indexes.
ADDITIONS: Additions = {
    "tables": {"farms", "task_runs", "task_metrics", "maintenance_runs", "farm_dataset_hosts"},
    "indexes": {name: set() for name in EXPECTED} | {
        "tasks": {"idx_claim", "idx_type_status"},
        "task_assignments": {"idx_status_updated", "idx_status_client_task"},
    },
}


@dataclass
class _LiveTable:
    """One table as the database has it, normalized to the terms of TableSpec."""

    columns: dict[str, ColumnSpec] = field(default_factory=dict)
    primary_key: tuple[str, ...] = ()
    indexes: dict[str, tuple[str, IndexSpec]] = field(default_factory=dict)  # normalized name -> (real name, spec)
    foreign_keys: list[tuple[str, ForeignKeySpec]] = field(default_factory=list)  # (constraint name, spec)
    json_checks: set[str] = field(default_factory=set)
    other_checks: list[str] = field(default_factory=list)
    engine: str | None = None
    collation: str | None = None


async def check_schema(db: Database) -> SchemaReport:
    """Compare the live schema of `db` to the seed document's and report every difference."""
    async with db.connect() as conn:
        if db.dialect == "mysql":
            live = await _read_mysql(conn)
        else:
            live = await _read_sqlite(conn)
    return _compare(live, mysql=db.dialect == "mysql")


# --- normalization -------------------------------------------------------------------------------


def _s(value: Any) -> Any:
    return value.decode() if isinstance(value, (bytes, bytearray)) else value


def _normalize_default(value: Any) -> str | None:
    """None for no default; CURRENT_TIMESTAMP however spelled; string literals unquoted."""
    if value is None:
        return None
    out = str(_s(value)).strip()
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


def _normalize_rule(rule: Any) -> str:
    rule = str(_s(rule) or "NO ACTION").strip().upper()
    # InnoDB treats RESTRICT and NO ACTION alike, and MariaDB and MySQL 8 report an unspecified rule differently.
    return "NO ACTION" if rule == "RESTRICT" else rule


def _compact(sql: str) -> str:
    """Whitespace collapsed, none around parentheses and commas, identifier quotes removed."""
    out = re.sub(r"[`\"]", "", sql)
    out = re.sub(r"\s+", " ", out).strip()
    out = re.sub(r"\s*([(),])\s*", r"\1", out)
    while out.startswith("(") and _matching_paren(_mask_sql(out), 0) == len(out) - 1:
        out = out[1:-1].strip()
    return out


def _json_checked_column(clause: str) -> str | None:
    """The column of `json_valid(col)` or `col IS NULL OR json_valid(col)`, else None."""
    norm = _compact(clause).lower()
    match = re.fullmatch(r"json_valid\((\w+)\)", norm)
    if match:
        return match.group(1)
    match = re.fullmatch(r"(\w+) is null or json_valid\((\w+)\)", norm) or re.fullmatch(
        r"json_valid\((\w+)\) or (\w+) is null", norm
    )
    if match and match.group(1) == match.group(2):
        return match.group(1)
    return None


_STRING_LITERAL = re.compile(r"'((?:''|[^'])*)'")


def _enum_check(clause: str) -> tuple[str, str] | None:
    """(column, enum(...)) for a `col IN ('a', 'b')` check, else None."""
    match = re.fullmatch(r"(\w+) in\((.*)\)", _compact(clause), re.IGNORECASE | re.DOTALL)
    if not match:
        return None
    body, pos = match.group(2), 0
    values: list[str] = []
    while True:
        literal = _STRING_LITERAL.match(body, pos)
        if literal is None:
            return None
        values.append(literal.group(1).replace("''", "'"))
        pos = literal.end()
        if pos == len(body):
            return match.group(1), _enum(*values)
        if body[pos] != ",":
            return None
        pos += 1


def _mysql_type(column_type: str) -> str:
    out = re.sub(r"\s+", " ", column_type.strip().lower())
    # MariaDB and MySQL 5.x show a display width (int(11)); MySQL 8 does not, and it means nothing.
    return re.sub(r"^(tinyint|smallint|mediumint|int|bigint)\(\d+\)", r"\1", out)


def _sqlite_type(declared: str) -> str:
    out = re.sub(r"\s+", " ", declared.strip().lower())
    out = re.sub(r"\s*([(),])\s*", r"\1", out)
    if out in ("integer", "int"):
        return "int"
    if out in ("real", "float", "double"):
        return "float"
    return out


# --- MySQL / MariaDB -----------------------------------------------------------------------------


async def _rows(conn: AsyncConnection, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    result = await conn.execute(text(sql), params)
    return [tuple(_s(v) for v in row) for row in result.all()]


async def _read_mysql(conn: AsyncConnection) -> dict[str, _LiveTable]:
    """Every base table of the current database, from information_schema."""
    tables: dict[str, _LiveTable] = {}
    for name, engine, collation in await _rows(
        conn,
        "SELECT TABLE_NAME, ENGINE, TABLE_COLLATION FROM information_schema.TABLES "
        "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE'",
    ):
        tables[name] = _LiveTable(engine=engine, collation=collation)

    checks = await _mysql_checks(conn)
    column_rows = await _rows(
        conn,
        "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT, EXTRA "
        "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME, ORDINAL_POSITION",
    )
    longtext: set[tuple[str, str]] = set()
    for table, column, column_type, is_nullable, default, extra in column_rows:
        if table not in tables:
            continue
        type_ = _mysql_type(column_type)
        if type_ == "longtext":
            longtext.add((table, column))
        extra = (extra or "").lower()
        tables[table].columns[column] = ColumnSpec(
            type=type_,
            nullable=is_nullable == "YES",
            default=_normalize_default(default),
            auto_increment="auto_increment" in extra,
            on_update="on update current_timestamp" in extra,
        )

    for table, clause, level in checks:
        if table not in tables:
            continue
        live = tables[table]
        column = _json_checked_column(clause)
        if column is None:
            live.other_checks.append(clause)
            continue
        if (table, column) in longtext:
            # MariaDB stores JSON as LONGTEXT with a json_valid check on the column: that is the type json.
            live.columns[column] = replace(live.columns[column], type="json")
            if level == "column":
                continue  # the JSON alias's own check, not the seed's table CHECK
        live.json_checks.add(column)

    index_columns: dict[tuple[str, str], list[str]] = {}
    index_unique: dict[tuple[str, str], bool] = {}
    for table, index, non_unique, column, sub_part in await _rows(
        conn,
        "SELECT TABLE_NAME, INDEX_NAME, NON_UNIQUE, COLUMN_NAME, SUB_PART FROM information_schema.STATISTICS "
        "WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX",
    ):
        if table not in tables:
            continue
        name = column if column is not None else "(expression)"
        index_columns.setdefault((table, index), []).append(f"{name}({sub_part})" if sub_part else name)
        index_unique[(table, index)] = not int(non_unique)
    for (table, index), columns in index_columns.items():
        if index == "PRIMARY":
            tables[table].primary_key = tuple(columns)
        else:
            tables[table].indexes[index] = (index, IndexSpec(tuple(columns), index_unique[(table, index)]))

    fk_rows = await _rows(
        conn,
        "SELECT k.TABLE_NAME, k.CONSTRAINT_NAME, k.COLUMN_NAME, k.REFERENCED_TABLE_NAME, "
        "k.REFERENCED_COLUMN_NAME, r.DELETE_RULE, r.UPDATE_RULE "
        "FROM information_schema.KEY_COLUMN_USAGE k "
        "JOIN information_schema.REFERENTIAL_CONSTRAINTS r ON r.CONSTRAINT_SCHEMA = k.CONSTRAINT_SCHEMA "
        "AND r.TABLE_NAME = k.TABLE_NAME AND r.CONSTRAINT_NAME = k.CONSTRAINT_NAME "
        "WHERE k.TABLE_SCHEMA = DATABASE() ORDER BY k.TABLE_NAME, k.CONSTRAINT_NAME, k.ORDINAL_POSITION",
    )
    grouped: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    for row in fk_rows:
        grouped.setdefault((row[0], row[1]), []).append(row)
    for (table, constraint), rows in grouped.items():
        if table not in tables:
            continue
        spec = ForeignKeySpec(
            columns=tuple(r[2] for r in rows),
            ref_table=rows[0][3],
            ref_columns=tuple(r[4] for r in rows),
            on_delete=_normalize_rule(rows[0][5]),
            on_update=_normalize_rule(rows[0][6]),
        )
        tables[table].foreign_keys.append((constraint, spec))
    return tables


async def _mysql_checks(conn: AsyncConnection) -> list[tuple[str, str, str | None]]:
    """(table, check clause, 'column'/'table'/None) for every CHECK constraint of the current database."""
    info_columns = {
        str(row[0]).upper()
        for row in await _rows(
            conn,
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = 'information_schema' AND TABLE_NAME = 'CHECK_CONSTRAINTS'",
        )
    }
    # MariaDB's check names are unique per table only (CONSTRAINT_1 in each), so it must also match
    # TABLE_NAME; MySQL 8 has no TABLE_NAME there (its names are unique per schema) and no LEVEL.
    on_table = " AND cc.TABLE_NAME = tc.TABLE_NAME" if "TABLE_NAME" in info_columns else ""
    level = "cc.LEVEL" if "LEVEL" in info_columns else "NULL"
    rows = await _rows(
        conn,
        f"SELECT tc.TABLE_NAME, cc.CHECK_CLAUSE, {level} "
        "FROM information_schema.TABLE_CONSTRAINTS tc "
        "JOIN information_schema.CHECK_CONSTRAINTS cc ON cc.CONSTRAINT_SCHEMA = tc.CONSTRAINT_SCHEMA "
        f"AND cc.CONSTRAINT_NAME = tc.CONSTRAINT_NAME{on_table} "
        "WHERE tc.TABLE_SCHEMA = DATABASE() AND tc.CONSTRAINT_TYPE = 'CHECK' "
        "ORDER BY tc.TABLE_NAME, tc.CONSTRAINT_NAME",
    )
    return [(table, clause, level.lower() if level else None) for table, clause, level in rows]


# --- SQLite --------------------------------------------------------------------------------------


def _mask_sql(sql: str) -> str:
    """`sql` with quoted text and comments blanked out (same length), so structure can be found by position."""
    out = list(sql)
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in "'\"`[":
            close = "]" if ch == "[" else ch
            j = i + 1
            while j < n:
                if sql[j] == close:
                    if close != "]" and j + 1 < n and sql[j + 1] == close:
                        j += 2  # a doubled quote inside the literal
                        continue
                    break
                j += 1
            for k in range(i + 1, min(j, n)):
                out[k] = "x"
            i = j + 1
        elif sql.startswith("--", i) or sql.startswith("/*", i):
            end = sql.find("\n", i) if ch == "-" else sql.find("*/", i)
            end = n if end < 0 else end + (0 if ch == "-" else 2)
            for k in range(i, end):
                out[k] = " "
            i = end
        else:
            i += 1
    return "".join(out)


def _matching_paren(masked: str, start: int) -> int:
    """Index of the ')' closing the '(' at `start` in masked SQL, or -1."""
    depth = 0
    for i in range(start, len(masked)):
        if masked[i] == "(":
            depth += 1
        elif masked[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    return -1


def _parse_create_table(sql: str) -> tuple[set[str], list[str]]:
    """From an SQLite CREATE TABLE: the AUTOINCREMENT columns, and every CHECK expression."""
    masked = _mask_sql(sql)
    open_at = masked.find("(")
    close_at = _matching_paren(masked, open_at) if open_at >= 0 else -1
    if close_at < 0:
        return set(), []
    autoincrement: set[str] = set()
    start = open_at + 1
    depth = 0
    parts: list[tuple[int, int]] = []
    for i in range(open_at + 1, close_at + 1):
        ch = masked[i]
        if ch == "(":
            depth += 1
        elif ch == ")" and i < close_at:
            depth -= 1
        elif (ch == "," and depth == 0) or i == close_at:
            parts.append((start, i))
            start = i + 1
    for begin, end in parts:
        part_masked = masked[begin:end].strip()
        if not part_masked or re.match(r"(constraint|primary|unique|check|foreign)\b", part_masked, re.IGNORECASE):
            continue
        if re.search(r"\bautoincrement\b", part_masked, re.IGNORECASE):
            name = sql[begin:end].strip().split()[0]
            autoincrement.add(name.strip('`"[]'))
    checks = []
    for match in re.finditer(r"\bcheck\s*\(", masked, re.IGNORECASE):
        paren = match.end() - 1
        end = _matching_paren(masked, paren)
        if end > paren:
            checks.append(sql[paren + 1 : end].strip())
    return autoincrement, checks


def _on_update_column(table: str, trigger: str, trigger_sql: str) -> str | None:
    """The column a `<table>_on_update_<column>` trigger sets to CURRENT_TIMESTAMP (the migration's ON UPDATE)."""
    column = trigger.removeprefix(f"{table}_on_update_")
    if column == trigger:
        return None
    pattern = rf"\bset\s+[`\"]?{re.escape(column)}[`\"]?\s*=\s*current_timestamp\b"
    return column if re.search(pattern, trigger_sql, re.IGNORECASE) else None


async def _read_sqlite(conn: AsyncConnection) -> dict[str, _LiveTable]:
    """Every table of the SQLite file, from sqlite_master and the PRAGMA functions."""
    masters = await _rows(
        conn,
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
    )
    triggers = await _rows(conn, "SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'trigger'")
    tables: dict[str, _LiveTable] = {}
    for table, create_sql in masters:
        live = tables[table] = _LiveTable()
        autoincrement, checks = _parse_create_table(create_sql or "")
        enums: dict[str, str] = {}
        for clause in checks:
            column = _json_checked_column(clause)
            enum = _enum_check(clause)
            if column is not None:
                live.json_checks.add(column)
            elif enum is not None:
                enums[enum[0]] = enum[1]
            else:
                live.other_checks.append(clause)
        on_update = {
            column
            for trigger, tbl_name, trigger_sql in triggers
            if tbl_name == table and (column := _on_update_column(table, trigger, trigger_sql or ""))
        }
        pk: list[tuple[int, str]] = []
        for name, declared, notnull, default, pk_pos in await _rows(
            conn, 'SELECT name, type, "notnull", dflt_value, pk FROM pragma_table_info(:t)', t=table
        ):
            type_ = _sqlite_type(declared or "")
            if name in enums:
                type_ = enums[name]
            elif name in live.json_checks and type_ in ("text", "json"):
                type_ = "json"
            # INTEGER PRIMARY KEY is the rowid, which cannot be NULL although table_info says notnull=0.
            rowid = bool(pk_pos) and type_ == "int"
            live.columns[name] = ColumnSpec(
                type=type_,
                nullable=not notnull and not rowid,
                default=_normalize_default(default),
                auto_increment=name in autoincrement,
                on_update=name in on_update,
            )
            if pk_pos:
                pk.append((pk_pos, name))
        live.primary_key = tuple(name for _, name in sorted(pk))

        for index, unique, origin in await _rows(
            conn, "SELECT name, \"unique\", origin FROM pragma_index_list(:t)", t=table
        ):
            if origin == "pk":
                continue  # the primary key's automatic index, compared as the primary key
            columns = tuple(
                name if name is not None else "(expression)"
                for _, name in sorted(
                    (seqno, name)
                    for seqno, _, name in await _rows(
                        conn, "SELECT seqno, cid, name FROM pragma_index_info(:i)", i=index
                    )
                )
            )
            # SQLite index names are global, so the migration prefixed each with its table.
            normalized = index.removeprefix(f"{table}_")
            live.indexes[normalized] = (index, IndexSpec(columns, bool(unique)))

        grouped: dict[int, list[tuple[Any, ...]]] = {}
        for row in await _rows(
            conn,
            'SELECT id, seq, "table", "from", "to", on_update, on_delete FROM pragma_foreign_key_list(:t)',
            t=table,
        ):
            grouped.setdefault(row[0], []).append(row)
        for fk_id, rows in sorted(grouped.items()):
            rows.sort(key=lambda r: r[1])
            live.foreign_keys.append(
                (
                    f"fk#{fk_id}",
                    ForeignKeySpec(
                        columns=tuple(r[3] for r in rows),
                        ref_table=rows[0][2],
                        ref_columns=tuple(r[4] or "" for r in rows),
                        on_delete=_normalize_rule(rows[0][6]),
                        on_update=_normalize_rule(rows[0][5]),
                    ),
                )
            )
    # `REFERENCES t` without columns means t's primary key.
    for live in tables.values():
        for i, (name, fk) in enumerate(live.foreign_keys):
            if "" in fk.ref_columns and fk.ref_table in tables:
                ref = ForeignKeySpec(fk.columns, fk.ref_table, tables[fk.ref_table].primary_key, fk.on_delete, fk.on_update)
                live.foreign_keys[i] = (name, ref)
    return tables


# --- comparison ----------------------------------------------------------------------------------


def _compare(live: dict[str, _LiveTable], *, mysql: bool) -> SchemaReport:
    differences: list[str] = []
    additions: list[str] = []
    for name in sorted(ADDITIONS["tables"]):
        if name in live:
            additions.append(f"table {name}")
    for name, spec in EXPECTED.items():
        if name not in live:
            differences.append(f"table {name}: missing (expected by the seed schema)")
            continue
        differences.extend(_compare_table(name, spec, live[name], mysql=mysql))
    for name in sorted(live):
        added = ADDITIONS["indexes"].get(name, set())
        for normalized, (real, index) in sorted(live[name].indexes.items()):
            if normalized in added or real in added:
                additions.append(f"index {name}.{real} ({', '.join(index.columns)})")
    return SchemaReport(differences=differences, additions=additions)


def _flag(value: bool) -> str:
    return "yes" if value else "no"


def _compare_table(name: str, spec: TableSpec, live: _LiveTable, *, mysql: bool) -> list[str]:
    out: list[str] = []
    where = f"table {name}:"
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

    if live.primary_key != spec.primary_key:
        actual_pk = f"({', '.join(live.primary_key)})" if live.primary_key else "none"
        out.append(f"{where} primary key: expected ({', '.join(spec.primary_key)}), actual {actual_pk}")

    for index, expected_index in spec.indexes.items():
        found = live.indexes.get(index)
        if found is None:
            out.append(f"{where} index {index} missing (expected {expected_index.render(index)})")
        elif found[1] != expected_index:
            out.append(
                f"{where} index {index}: expected {expected_index.render(index)}, actual {found[1].render(found[0])}"
            )
    added = ADDITIONS["indexes"].get(name, set())
    fk_columns = {fk.columns: constraint for constraint, fk in live.foreign_keys}
    fk_columns.update({fk.columns: "" for fk in spec.foreign_keys if fk.columns not in fk_columns})
    for normalized, (real, index) in sorted(live.indexes.items()):
        if normalized in spec.indexes or normalized in added or real in added:
            continue
        if _is_implicit_fk_index(normalized, index, fk_columns):
            continue
        out.append(f"{where} unexpected index {real}: {index.render(real)}")

    remaining = list(live.foreign_keys)
    for expected_fk in spec.foreign_keys:
        same = [item for item in remaining if item[1] == expected_fk]
        similar = same or [item for item in remaining if item[1].columns == expected_fk.columns]
        if not similar:
            out.append(f"{where} foreign key ({', '.join(expected_fk.columns)}) missing (expected {expected_fk.render()})")
            continue
        remaining.remove(similar[0])
        if not same:
            out.append(
                f"{where} foreign key ({', '.join(expected_fk.columns)}) {similar[0][0]}: "
                f"expected {expected_fk.render()}, actual {similar[0][1].render()}"
            )
    for constraint, fk in remaining:
        out.append(f"{where} unexpected foreign key {constraint}: {fk.render()}")

    for column in sorted(spec.json_checks - live.json_checks):
        out.append(f"{where} CHECK (JSON_VALID({column})) missing")
    for column in sorted(live.json_checks - spec.json_checks):
        out.append(f"{where} unexpected CHECK (JSON_VALID({column}))")
    for clause in live.other_checks:
        out.append(f"{where} unexpected CHECK ({clause})")

    if mysql:
        if (live.engine or "").lower() != EXPECTED_ENGINE.lower():
            out.append(f"{where} engine: expected {EXPECTED_ENGINE}, actual {live.engine or 'none'}")
        if not (live.collation or "").lower().startswith(f"{EXPECTED_CHARSET}_"):
            out.append(f"{where} collation: expected a {EXPECTED_CHARSET} collation, actual {live.collation or 'none'}")
    return out


def _is_implicit_fk_index(name: str, index: IndexSpec, fk_columns: dict[tuple[str, ...], str]) -> bool:
    """True for the index InnoDB adds for a foreign key (or the migration's SQLite `fk_<col>` equivalent)."""
    if index.unique or index.columns not in fk_columns:
        return False
    constraint = fk_columns[index.columns]
    first = re.escape(index.columns[0])
    joined = re.escape("_".join(index.columns))
    return name == constraint or bool(re.fullmatch(rf"(?:{first}|fk_{joined})(?:_\d+)?", name))

