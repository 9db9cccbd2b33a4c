"""Additions: indexes that serve the seed's queries on a large farm (measured in benchmarks/seed_queries.py).

- `task_assignments.idx_status_updated (status, updated_at)`: the orphaned-assignments cleanup.
- `task_assignments.idx_status_client_task (status, client_id, task_id, updated_at)`: "active clients with task
  counts" reads only open assignments, from the index.
- `tasks.idx_type_status (type, status, created_at, updated_at)`: the completion statistics by type, from the index.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

INDEXES = (
    ("task_assignments", "idx_status_updated", "status, updated_at"),
    ("task_assignments", "idx_status_client_task", "status, client_id, task_id, updated_at"),
    ("tasks", "idx_type_status", "type, status, created_at, updated_at"),
)


def upgrade() -> None:
    mysql = op.get_bind().dialect.name == "mysql"
    for table, name, columns in INDEXES:
        op.execute(f"CREATE INDEX {name if mysql else f'{table}_{name}'} ON {table} ({columns})")


def downgrade() -> None:
    mysql = op.get_bind().dialect.name == "mysql"
    for table, name, _ in INDEXES:
        op.execute(f"DROP INDEX {name} ON {table}" if mysql else f"DROP INDEX {table}_{name}")
