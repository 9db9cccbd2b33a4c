"""Addition: `maintenance_runs`, one row per maintenance sweep: the lease that lets one agent at a time run it,
and when it last ran with what result.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "mysql":
        op.execute(
            """
CREATE TABLE maintenance_runs (
    sweep VARCHAR(50) NOT NULL PRIMARY KEY,
    holder VARCHAR(255),
    lease_until DATETIME,
    last_run_at DATETIME,
    last_result JSON,

    CHECK (JSON_VALID(last_result))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci
"""
        )
    else:
        op.execute(
            """
CREATE TABLE maintenance_runs (
    sweep VARCHAR(50) NOT NULL PRIMARY KEY,
    holder VARCHAR(255),
    lease_until DATETIME,
    last_run_at DATETIME,
    last_result TEXT CHECK (last_result IS NULL OR json_valid(last_result))
)"""
        )


def downgrade() -> None:
    op.execute("DROP TABLE maintenance_runs")
