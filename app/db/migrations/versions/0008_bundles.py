"""Addition: `bundles`, the signed recipe bundles organisers published (the wheel itself stays on the peers).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    mysql = op.get_bind().dialect.name == "mysql"
    suffix = " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci" if mysql else ""
    key = "INT AUTO_INCREMENT PRIMARY KEY" if mysql else "INTEGER PRIMARY KEY AUTOINCREMENT"
    op.execute(
        f"""
CREATE TABLE bundles (
    id {key},
    name VARCHAR(100) NOT NULL,
    version VARCHAR(64) NOT NULL,
    sha256 VARCHAR(64) NOT NULL,
    key_fingerprint VARCHAR(32) NOT NULL,
    public_key VARCHAR(64) NOT NULL,
    signature VARCHAR(128) NOT NULL,
    manifest TEXT NOT NULL,
    publisher_id VARCHAR(255),
    published_at DATETIME NOT NULL,
    revoked_at DATETIME
)""" + suffix
    )
    op.execute("CREATE UNIQUE INDEX uq_bundle_name_version ON bundles (name, version)")


def downgrade() -> None:
    op.execute("DROP TABLE bundles")
