"""The seed's tables as SQLAlchemy Core objects, used to build queries (the DDL lives in migrations/)."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.dialects import sqlite

# SQLite keeps DATETIME as text; store it with second precision like MySQL's DATETIME, so that
# values written by Python and by CURRENT_TIMESTAMP compare correctly as strings.
_SQLITE_DATETIME = sqlite.DATETIME(
    storage_format="%(year)04d-%(month)02d-%(day)02d %(hour)02d:%(minute)02d:%(second)02d",
    regexp=r"(\d+)-(\d+)-(\d+) (\d+):(\d+):(\d+)(?:\.\d+)?",
)


def _datetime() -> DateTime:
    return DateTime().with_variant(_SQLITE_DATETIME, "sqlite")


def _json() -> JSON:
    return JSON(none_as_null=True)


TASK_STATUSES = ("pending", "running", "completed", "failed", "error")
ASSIGNMENT_STATUSES = ("assigned", "training", "completed", "failed")
CLIENT_STATUSES = ("active", "inactive")
CHECKPOINT_TYPES = ("regular", "distributed", "emergency", "final")
LOG_TYPES = ("info", "warning", "error")

metadata = MetaData()


def _enum(*values: str, name: str) -> Enum:
    return Enum(*values, name=name, native_enum=True, create_constraint=False, validate_strings=True)


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
    Column("priority", Integer, default=0),
    Column("config", _json()),
    Column("checkpoint_path", String(255)),
)

task_assignments = Table(
    "task_assignments",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("task_id", Integer, ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
    Column("client_id", String(255), ForeignKey("clients.id", ondelete="CASCADE"), nullable=False),
    Column("assigned_at", _datetime(), nullable=False),
    Column("updated_at", _datetime(), nullable=False),
    Column("status", _enum(*ASSIGNMENT_STATUSES, name="assignment_status"), nullable=False),
    Column("rank", Integer, nullable=False, quote=True),
    Column("checkpoint_path", String(255)),
    Column("metrics", _json()),
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
)

client_logs = Table(
    "client_logs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("client_id", String(255), ForeignKey("clients.id", ondelete="CASCADE")),
    Column("log_type", _enum(*LOG_TYPES, name="client_log_type"), nullable=False),
    Column("message", Text, nullable=False),
    Column("created_at", _datetime(), nullable=False),
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

# Additions to the seed (see README "The database").

farms = Table(
    "farms",
    metadata,
    Column("name", String(63), primary_key=True),
    Column("secret", String(128), nullable=False),
    Column("created_at", _datetime(), nullable=False),
)

task_runs = Table(
    "task_runs",
    metadata,
    Column("task_id", Integer, ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True, autoincrement=False),
    Column("generation", Integer, nullable=False, default=0),
    Column("failures", Integer, nullable=False, default=0),
    Column("coordinator_id", String(255), ForeignKey("clients.id", ondelete="SET NULL")),
    Column("rendezvous_host", String(255)),
    Column("rendezvous_port", Integer),
    Column("formed_at", _datetime()),
    Column("updated_at", _datetime(), nullable=False),
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
)

maintenance_runs = Table(
    "maintenance_runs",
    metadata,
    Column("sweep", String(50), primary_key=True),
    Column("holder", String(255)),
    Column("lease_until", _datetime()),
    Column("last_run_at", _datetime()),
    Column("last_result", _json()),
)

farm_dataset_hosts = Table(
    "farm_dataset_hosts",
    metadata,
    Column("farm_name", String(63), primary_key=True),
    Column("host", String(261), primary_key=True),
    Column("added_at", _datetime(), nullable=False),
)
