"""Addition: `task_metrics`, the training curves (loss, accuracy, validation) of a task by step, for charts.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "mysql":
        op.execute(
            """
CREATE TABLE task_metrics (
    id INT AUTO_INCREMENT PRIMARY KEY,
    task_id INT NOT NULL,
    step INT NOT NULL,
    name VARCHAR(50) NOT NULL,
    value FLOAT NOT NULL,
    recorded_at DATETIME NOT NULL,
    INDEX idx_task_step (task_id, step),
    FOREIGN KEY (task_id) REFERENCES tasks(id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci
"""
        )
    else:
        op.execute(
            """
CREATE TABLE task_metrics (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    step INTEGER NOT NULL,
    name VARCHAR(50) NOT NULL,
    value REAL NOT NULL,
    recorded_at DATETIME NOT NULL
)"""
        )
        op.execute("CREATE INDEX task_metrics_idx_task_step ON task_metrics (task_id, step)")


def downgrade() -> None:
    op.execute("DROP TABLE task_metrics")
