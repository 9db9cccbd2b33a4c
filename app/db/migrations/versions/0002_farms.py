"""Addition: `farms`, one row per farm name with the shared secret that signs peer API requests.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "mysql":
        op.execute(
            """
CREATE TABLE farms (
    name VARCHAR(63) NOT NULL PRIMARY KEY,
    secret VARCHAR(128) NOT NULL,
    created_at DATETIME NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci
"""
        )
    else:
        op.execute(
            """
CREATE TABLE farms (
    name VARCHAR(63) NOT NULL PRIMARY KEY,
    secret VARCHAR(128) NOT NULL,
    created_at DATETIME NOT NULL
)"""
        )


def downgrade() -> None:
    op.execute("DROP TABLE farms")
