"""Addition: `peer_links`, the last measured throughput and latency from one client to another over the peer API.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

COLUMNS = """
    from_client VARCHAR(255) NOT NULL,
    to_client VARCHAR(255) NOT NULL,
    mbit_per_s FLOAT NOT NULL,
    latency_ms FLOAT NOT NULL,
    measured_at DATETIME NOT NULL,
    PRIMARY KEY (from_client, to_client),
    FOREIGN KEY (from_client) REFERENCES clients(id) ON DELETE CASCADE,
    FOREIGN KEY (to_client) REFERENCES clients(id) ON DELETE CASCADE
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "mysql":
        op.execute(f"CREATE TABLE peer_links ({COLUMNS}) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci")
    else:
        op.execute(f"CREATE TABLE peer_links ({COLUMNS.replace('FLOAT', 'REAL')})")


def downgrade() -> None:
    op.execute("DROP TABLE peer_links")
