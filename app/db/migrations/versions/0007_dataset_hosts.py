"""Addition: `farm_dataset_hosts`, the hosts a farm's tasks may download datasets from (set by the organiser).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    suffix = " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci" if op.get_bind().dialect.name == "mysql" else ""
    op.execute(
        """
CREATE TABLE farm_dataset_hosts (
    farm_name VARCHAR(63) NOT NULL,
    host VARCHAR(261) NOT NULL,
    added_at DATETIME NOT NULL,
    PRIMARY KEY (farm_name, host)
)""" + suffix
    )


def downgrade() -> None:
    op.execute("DROP TABLE farm_dataset_hosts")
