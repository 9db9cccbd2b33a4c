"""Additions for scheduling: the claim index and `task_runs`.

- `tasks.idx_claim (status, priority DESC, created_at, id)`: serves the claim's
  `ORDER BY priority DESC, created_at ASC` so `FOR UPDATE SKIP LOCKED` walks it in order (MariaDB skips
  rows it should see without an index that serves the order).
- `task_runs`: per task, the election generation (a fencing token: every coordinator write names it),
  the failures so far, the coordinator and its rendezvous address.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TASK_RUNS_COLUMNS = """
    task_id INT NOT NULL PRIMARY KEY,
    generation INT NOT NULL DEFAULT 0,
    failures INT NOT NULL DEFAULT 0,
    coordinator_id VARCHAR(255),
    rendezvous_host VARCHAR(255),
    rendezvous_port INT,
    formed_at DATETIME,
    updated_at DATETIME NOT NULL,
    FOREIGN KEY (task_id) REFERENCES tasks(id) ON DELETE CASCADE,
    FOREIGN KEY (coordinator_id) REFERENCES clients(id) ON DELETE SET NULL
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "mysql":
        op.execute("CREATE INDEX idx_claim ON tasks (status, priority DESC, created_at, id)")
        op.execute(
            f"CREATE TABLE task_runs ({TASK_RUNS_COLUMNS}) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci"
        )
    else:
        op.execute("CREATE INDEX tasks_idx_claim ON tasks (status, priority DESC, created_at, id)")
        op.execute(f"CREATE TABLE task_runs ({TASK_RUNS_COLUMNS.replace('INT NOT NULL PRIMARY KEY', 'INTEGER NOT NULL PRIMARY KEY')})")
        op.execute("CREATE INDEX task_runs_fk_coordinator_id ON task_runs (coordinator_id)")


def downgrade() -> None:
    op.execute("DROP TABLE task_runs")
    if op.get_bind().dialect.name == "mysql":
        op.execute("DROP INDEX idx_claim ON tasks")
    else:
        op.execute("DROP INDEX tasks_idx_claim")
