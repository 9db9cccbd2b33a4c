"""Additions for published datasets: `datasets` (name, version, manifest, publisher) and `dataset_shard_copies`
(which client holds, or is fetching, which shard of which dataset).

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

MYSQL_SUFFIX = " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci"


def upgrade() -> None:
    mysql = op.get_bind().dialect.name == "mysql"
    manifest = "manifest JSON NOT NULL" if mysql else "manifest TEXT NOT NULL CHECK (json_valid(manifest))"
    check = ",\n    CHECK (JSON_VALID(manifest))" if mysql else ""
    unique = "UNIQUE KEY unique_name_version (name, version),\n    " if mysql else ""
    op.execute(f"""
CREATE TABLE datasets (
    id {"INT" if mysql else "INTEGER"} NOT NULL PRIMARY KEY {"AUTO_INCREMENT" if mysql else "AUTOINCREMENT"},
    name VARCHAR(64) NOT NULL,
    version INT NOT NULL,
    kind VARCHAR(16) NOT NULL,
    {manifest},
    total_bytes BIGINT NOT NULL,
    publisher_id VARCHAR(255),
    created_at DATETIME NOT NULL,
    {unique}FOREIGN KEY (publisher_id) REFERENCES clients(id) ON DELETE SET NULL{check}
)""" + (MYSQL_SUFFIX if mysql else ""))
    op.execute("""
CREATE TABLE dataset_shard_copies (
    dataset_id INT NOT NULL,
    shard VARCHAR(255) NOT NULL,
    client_id VARCHAR(255) NOT NULL,
    status VARCHAR(16) NOT NULL,
    updated_at DATETIME NOT NULL,
    PRIMARY KEY (dataset_id, shard, client_id),
    FOREIGN KEY (dataset_id) REFERENCES datasets(id) ON DELETE CASCADE,
    FOREIGN KEY (client_id) REFERENCES clients(id) ON DELETE CASCADE
)""" + (MYSQL_SUFFIX if mysql else ""))
    if not mysql:
        op.execute("CREATE UNIQUE INDEX datasets_unique_name_version ON datasets (name, version)")
        op.execute("CREATE INDEX datasets_fk_publisher_id ON datasets (publisher_id)")
        op.execute("CREATE INDEX dataset_shard_copies_fk_client_id ON dataset_shard_copies (client_id)")


def downgrade() -> None:
    op.execute("DROP TABLE dataset_shard_copies")
    op.execute("DROP TABLE datasets")
