"""The schema, described once: the seed's tables (ai-farm-schema.md) and the product's additions.

Queries are built from these tables, `db check` compares a live database with them, and a test proves
the migrations in migrations/ build exactly this. Additions carry `info={"addition": True}`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    DefaultClause,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects import sqlite

from app.statuses import TASK_STATUSES

# SQLite keeps DATETIME as text; store it with second precision like MySQL's DATETIME, so that
# values written by Python and by CURRENT_TIMESTAMP compare correctly as strings.
_SQLITE_DATETIME = sqlite.DATETIME(  # type: ignore[no-untyped-call]  # untyped in SQLAlchemy
    storage_format="%(year)04d-%(month)02d-%(day)02d %(hour)02d:%(minute)02d:%(second)02d",
    regexp=r"(\d+)-(\d+)-(\d+) (\d+):(\d+):(\d+)(?:\.\d+)?",
)

# Every table is InnoDB in utf8mb4 on MySQL/MariaDB (the seed's database default).
_MYSQL_TABLE: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_general_ci"}


def _addition() -> dict[Any, Any]:
    """The `info` of a table or index that the product adds to the seed."""
    return {"addition": True}


def is_addition(item: Table | Index) -> bool:
    """True for a table or index that the product adds to the seed (documented in README)."""
    return bool(item.info.get("addition"))


def _datetime() -> DateTime:
    return DateTime().with_variant(_SQLITE_DATETIME, "sqlite")


def _json() -> JSON:
    return JSON(none_as_null=True)


def _json_valid(table: str, column: str) -> CheckConstraint:
    """The seed's `CHECK (JSON_VALID(column))`."""
    return CheckConstraint(f"JSON_VALID({column})", name=f"ck_{table}_{column}_json")


def _now() -> DefaultClause:
    return DefaultClause(text("CURRENT_TIMESTAMP"))


def _on_update_now() -> DefaultClause:
    """ON UPDATE CURRENT_TIMESTAMP (MySQL); a trigger on SQLite."""
    return DefaultClause(text("CURRENT_TIMESTAMP"), for_update=True)


ASSIGNMENT_STATUSES = ("assigned", "training", "completed", "failed")
CLIENT_STATUSES = ("active", "inactive")
CHECKPOINT_TYPES = ("regular", "distributed", "emergency", "final")
LOG_TYPES = ("info", "warning", "error")

metadata = MetaData()


def _enum(*values: str, name: str) -> Enum:
    return Enum(*values, name=name, native_enum=True, create_constraint=False, validate_strings=True)


# --- the seed ------------------------------------------------------------------------------------------

clients = Table(
    "clients",
    metadata,
    Column("id", String(255), primary_key=True),
    Column("cpu_info", _json(), nullable=False),
    Column("ram_info", _json(), nullable=False),
    Column("gpu_info", _json()),
    Column("session_info", _json()),
    Column("last_seen", _datetime(), nullable=False),
    Column("status", _enum(*CLIENT_STATUSES, name="client_status"), nullable=False),
    Column("version", String(50)),
    Column("hostname", String(255)),
    Index("idx_status", "status"),
    Index("idx_last_seen", "last_seen"),
    _json_valid("clients", "cpu_info"),
    _json_valid("clients", "ram_info"),
    _json_valid("clients", "gpu_info"),
    _json_valid("clients", "session_info"),
    **_MYSQL_TABLE,
)

tasks = Table(
    "tasks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("type", String(255), nullable=False),
    Column("requirements", _json(), nullable=False),
    Column("status", _enum(*TASK_STATUSES, name="task_status"), nullable=False),
    Column("client_id", String(255), ForeignKey("clients.id", ondelete="SET NULL")),
    Column("created_at", _datetime(), nullable=False),
    Column("updated_at", _datetime(), nullable=False),
    Column("result", _json()),
    Column("error_log", Text),
    Column("priority", Integer, default=0, server_default=text("0")),
    Column("config", _json()),
    Column("checkpoint_path", String(255)),
    Index("idx_status", "status"),
    Index("idx_priority", "priority"),
    Index("idx_created_at", "created_at"),
    _json_valid("tasks", "requirements"),
    _json_valid("tasks", "config"),
    _json_valid("tasks", "result"),
    **_MYSQL_TABLE,
)

task_assignments = Table(
    "task_assignments",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("task_id", Integer, ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
    Column("client_id", String(255), ForeignKey("clients.id", ondelete="CASCADE"), nullable=False),
    Column("assigned_at", _datetime(), nullable=False, server_default=_now()),
    Column("updated_at", _datetime(), nullable=False, server_default=_now(), server_onupdate=_on_update_now()),
    Column("status", _enum(*ASSIGNMENT_STATUSES, name="assignment_status"), nullable=False),
    Column("rank", Integer, nullable=False, quote=True),
    Column("checkpoint_path", String(255)),
    Column("metrics", _json()),
    Index("idx_task_status", "task_id", "status"),
    Index("idx_client_status", "client_id", "status"),
    Index("unique_assignment", "task_id", "rank", unique=True),
    _json_valid("task_assignments", "metrics"),
    **_MYSQL_TABLE,
)

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("task_id", Integer, ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
    Column("client_id", String(255), ForeignKey("clients.id", ondelete="SET NULL")),
    Column("path", String(255), nullable=False),
    Column("type", _enum(*CHECKPOINT_TYPES, name="checkpoint_type"), nullable=False),
    Column("metrics", _json()),
    Column("created_at", _datetime(), nullable=False),
    Index("idx_task_type", "task_id", "type"),
    _json_valid("checkpoints", "metrics"),
    **_MYSQL_TABLE,
)

model_versions = Table(
    "model_versions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False),
    Column("version", String(50), nullable=False),
    Column("url", Text, nullable=False),
    Column("config", _json()),
    Column("hash", String(64)),
    Column("created_at", _datetime(), nullable=False),
    Index("unique_version", "name", "version", unique=True),
    Index("idx_name_version", "name", "version"),
    _json_valid("model_versions", "config"),
    **_MYSQL_TABLE,
)

task_logs = Table(
    "task_logs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("task_id", Integer, ForeignKey("tasks.id", ondelete="CASCADE")),
    Column("client_id", String(255), ForeignKey("clients.id", ondelete="CASCADE")),
    Column("log_type", _enum(*LOG_TYPES, name="log_type"), nullable=False),
    Column("message", Text, nullable=False),
    Column("created_at", _datetime(), nullable=False),
    Index("idx_task_time", "task_id", "created_at"),
    Index("idx_client_time", "client_id", "created_at"),
    **_MYSQL_TABLE,
)

client_logs = Table(
    "client_logs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("client_id", String(255), ForeignKey("clients.id", ondelete="CASCADE")),
    Column("log_type", _enum(*LOG_TYPES, name="client_log_type"), nullable=False),
    Column("message", Text, nullable=False),
    Column("created_at", _datetime(), nullable=False),
    Index("idx_client_time", "client_id", "created_at"),
    **_MYSQL_TABLE,
)

performance_metrics = Table(
    "performance_metrics",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("client_id", String(255), ForeignKey("clients.id", ondelete="CASCADE"), nullable=False),
    Column("task_id", Integer, ForeignKey("tasks.id", ondelete="CASCADE")),
    Column("metric_type", String(50), nullable=False),
    Column("value", Float, nullable=False),
    Column("recorded_at", _datetime(), nullable=False),
    Index("idx_client_time", "client_id", "recorded_at"),
    Index("idx_task_time", "task_id", "recorded_at"),
    **_MYSQL_TABLE,
)

SEED_TABLES = (
    "clients",
    "tasks",
    "task_assignments",
    "checkpoints",
    "model_versions",
    "task_logs",
    "client_logs",
    "performance_metrics",
)

# --- additions to the seed (see README "The database"); each marked info=_addition() ------------------------

Index("idx_claim", tasks.c.status, tasks.c.priority.desc(), tasks.c.created_at, tasks.c.id, info=_addition())
Index("idx_type_status", tasks.c.type, tasks.c.status, tasks.c.created_at, tasks.c.updated_at, info=_addition())
Index("idx_status_updated", task_assignments.c.status, task_assignments.c.updated_at, info=_addition())
Index(
    "idx_status_client_task",
    task_assignments.c.status,
    task_assignments.c.client_id,
    task_assignments.c.task_id,
    task_assignments.c.updated_at,
    info=_addition(),
)

farms = Table(
    "farms",
    metadata,
    Column("name", String(63), primary_key=True),
    Column("secret", String(128), nullable=False),
    Column("created_at", _datetime(), nullable=False),
    info=_addition(),
    **_MYSQL_TABLE,
)

task_runs = Table(
    "task_runs",
    metadata,
    Column("task_id", Integer, ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True, autoincrement=False),
    Column("generation", Integer, nullable=False, default=0, server_default=text("0")),
    Column("failures", Integer, nullable=False, default=0, server_default=text("0")),
    Column("coordinator_id", String(255), ForeignKey("clients.id", ondelete="SET NULL")),
    Column("rendezvous_host", String(255)),
    Column("rendezvous_port", Integer),
    Column("formed_at", _datetime()),
    Column("updated_at", _datetime(), nullable=False),
    info=_addition(),
    **_MYSQL_TABLE,
)

task_metrics = Table(
    "task_metrics",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("task_id", Integer, ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
    Column("step", Integer, nullable=False),
    Column("name", String(50), nullable=False),
    Column("value", Float, nullable=False),
    Column("recorded_at", _datetime(), nullable=False),
    Index("idx_task_step", "task_id", "step"),
    info=_addition(),
    **_MYSQL_TABLE,
)

maintenance_runs = Table(
    "maintenance_runs",
    metadata,
    Column("sweep", String(50), primary_key=True),
    Column("holder", String(255)),
    Column("lease_until", _datetime()),
    Column("last_run_at", _datetime()),
    Column("last_result", _json()),
    _json_valid("maintenance_runs", "last_result"),
    info=_addition(),
    **_MYSQL_TABLE,
)

peer_links = Table(
    "peer_links",
    metadata,
    Column("from_client", String(255), ForeignKey("clients.id", ondelete="CASCADE"), primary_key=True),
    Column("to_client", String(255), ForeignKey("clients.id", ondelete="CASCADE"), primary_key=True),
    Column("mbit_per_s", Float, nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("measured_at", _datetime(), nullable=False),
    info=_addition(),
    **_MYSQL_TABLE,
)

farm_dataset_hosts = Table(
    "farm_dataset_hosts",
    metadata,
    Column("farm_name", String(63), primary_key=True),
    Column("host", String(261), primary_key=True),
    Column("added_at", _datetime(), nullable=False),
    info=_addition(),
    **_MYSQL_TABLE,
)

bundles = Table(
    "bundles",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False),
    Column("version", String(64), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("key_fingerprint", String(32), nullable=False),
    Column("public_key", String(64), nullable=False),
    Column("signature", String(128), nullable=False),
    Column("manifest", Text, nullable=False),
    Column("publisher_id", String(255)),
    Column("published_at", _datetime(), nullable=False),
    Column("revoked_at", _datetime()),
    Index("uq_bundle_name_version", "name", "version", unique=True),
    info=_addition(),
    **_MYSQL_TABLE,
)

datasets = Table(
    "datasets",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("manifest", _json(), nullable=False),
    Column("total_bytes", BigInteger, nullable=False),
    Column("publisher_id", String(255), ForeignKey("clients.id", ondelete="SET NULL")),
    Column("created_at", _datetime(), nullable=False),
    Index("unique_name_version", "name", "version", unique=True),
    _json_valid("datasets", "manifest"),
    info=_addition(),
    **_MYSQL_TABLE,
)

dataset_shard_copies = Table(
    "dataset_shard_copies",
    metadata,
    Column("dataset_id", Integer, ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True, autoincrement=False),
    Column("shard", String(255), primary_key=True),
    Column("client_id", String(255), ForeignKey("clients.id", ondelete="CASCADE"), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("updated_at", _datetime(), nullable=False),
    info=_addition(),
    **_MYSQL_TABLE,
)
