"""The seed schema: the eight tables of ai-farm-schema.md.

MySQL/MariaDB get the seed's DDL as written, with two changes the text needs to run: `clients`
is created before the tables that reference it, and `rank` is quoted (reserved in MySQL 8).
SQLite gets the closest equivalent: ENUMs as CHECKs, JSON_VALID as json_valid (which is 0, not
NULL, for NULL there), index names prefixed by their table (SQLite index names are global),
and a trigger for ON UPDATE CURRENT_TIMESTAMP.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

MYSQL = [
    """
CREATE TABLE clients (
    id VARCHAR(255) PRIMARY KEY,
    cpu_info JSON NOT NULL,
    ram_info JSON NOT NULL,
    gpu_info JSON,
    session_info JSON,
    last_seen DATETIME NOT NULL,
    status ENUM('active', 'inactive') NOT NULL,
    version VARCHAR(50),
    hostname VARCHAR(255),

    INDEX idx_status (status),
    INDEX idx_last_seen (last_seen),

    CHECK (JSON_VALID(cpu_info)),
    CHECK (JSON_VALID(ram_info)),
    CHECK (JSON_VALID(gpu_info)),
    CHECK (JSON_VALID(session_info))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci
""",
    """
CREATE TABLE tasks (
    id INT AUTO_INCREMENT PRIMARY KEY,
    type VARCHAR(255) NOT NULL,
    requirements JSON NOT NULL,
    status ENUM(
        'pending',
        'running',
        'completed',
        'failed',
        'error'
    ) NOT NULL,
    client_id VARCHAR(255),
    created_at DATETIME NOT NULL,
    updated_at DATETIME NOT NULL,
    result JSON,
    error_log TEXT,
    priority INT DEFAULT 0,
    config JSON,
    checkpoint_path VARCHAR(255),

    INDEX idx_status (status),
    INDEX idx_priority (priority),
    INDEX idx_created_at (created_at),

    FOREIGN KEY (client_id)
        REFERENCES clients(id)
        ON DELETE SET NULL,

    CHECK (JSON_VALID(requirements)),
    CHECK (JSON_VALID(config)),
    CHECK (JSON_VALID(result))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci
""",
    """
CREATE TABLE task_assignments (
    id INT AUTO_INCREMENT PRIMARY KEY,
    task_id INT NOT NULL,
    client_id VARCHAR(255) NOT NULL,
    assigned_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP
        ON UPDATE CURRENT_TIMESTAMP,
    status ENUM(
        'assigned',
        'training',
        'completed',
        'failed'
    ) NOT NULL,
    `rank` INT NOT NULL,
    checkpoint_path VARCHAR(255),
    metrics JSON,

    INDEX idx_task_status (task_id, status),
    INDEX idx_client_status (client_id, status),
    UNIQUE KEY unique_assignment (task_id, `rank`),

    FOREIGN KEY (task_id)
        REFERENCES tasks(id)
        ON DELETE CASCADE,
    FOREIGN KEY (client_id)
        REFERENCES clients(id)
        ON DELETE CASCADE,

    CHECK (JSON_VALID(metrics))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci
""",
    """
CREATE TABLE checkpoints (
    id INT AUTO_INCREMENT PRIMARY KEY,
    task_id INT NOT NULL,
    client_id VARCHAR(255),
    path VARCHAR(255) NOT NULL,
    type ENUM(
        'regular',
        'distributed',
        'emergency',
        'final'
    ) NOT NULL,
    metrics JSON,
    created_at DATETIME NOT NULL,

    INDEX idx_task_type (task_id, type),

    FOREIGN KEY (task_id)
        REFERENCES tasks(id)
        ON DELETE CASCADE,
    FOREIGN KEY (client_id)
        REFERENCES clients(id)
        ON DELETE SET NULL,

    CHECK (JSON_VALID(metrics))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci
""",
    """
CREATE TABLE model_versions (
    id INT AUTO_INCREMENT PRIMARY KEY,
    name VARCHAR(255) NOT NULL,
    version VARCHAR(50) NOT NULL,
    url TEXT NOT NULL,
    config JSON,
    hash VARCHAR(64),
    created_at DATETIME NOT NULL,

    UNIQUE KEY unique_version (name, version),
    INDEX idx_name_version (name, version),

    CHECK (JSON_VALID(config))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci
""",
    """
CREATE TABLE task_logs (
    id INT AUTO_INCREMENT PRIMARY KEY,
    task_id INT,
    client_id VARCHAR(255),
    log_type ENUM('info', 'warning', 'error') NOT NULL,
    message TEXT NOT NULL,
    created_at DATETIME NOT NULL,

    INDEX idx_task_time (task_id, created_at),
    INDEX idx_client_time (client_id, created_at),

    FOREIGN KEY (task_id)
        REFERENCES tasks(id)
        ON DELETE CASCADE,
    FOREIGN KEY (client_id)
        REFERENCES clients(id)
        ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci
""",
    """
CREATE TABLE client_logs (
    id INT AUTO_INCREMENT PRIMARY KEY,
    client_id VARCHAR(255),
    log_type ENUM('info', 'warning', 'error') NOT NULL,
    message TEXT NOT NULL,
    created_at DATETIME NOT NULL,

    INDEX idx_client_time (client_id, created_at),

    FOREIGN KEY (client_id)
        REFERENCES clients(id)
        ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci
""",
    """
CREATE TABLE performance_metrics (
    id INT AUTO_INCREMENT PRIMARY KEY,
    client_id VARCHAR(255) NOT NULL,
    task_id INT,
    metric_type VARCHAR(50) NOT NULL,
    value FLOAT NOT NULL,
    recorded_at DATETIME NOT NULL,

    INDEX idx_client_time (client_id, recorded_at),
    INDEX idx_task_time (task_id, recorded_at),

    FOREIGN KEY (client_id)
        REFERENCES clients(id)
        ON DELETE CASCADE,
    FOREIGN KEY (task_id)
        REFERENCES tasks(id)
        ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci
""",
]


def _json_check(column: str, nullable: bool = True) -> str:
    return f"CHECK ({column} IS NULL OR json_valid({column}))" if nullable else f"CHECK (json_valid({column}))"


def _enum_check(column: str, *values: str) -> str:
    return f"CHECK ({column} IN ({', '.join(repr(v) for v in values)}))"


SQLITE = [
    f"""
CREATE TABLE clients (
    id VARCHAR(255) NOT NULL PRIMARY KEY,
    cpu_info TEXT NOT NULL,
    ram_info TEXT NOT NULL,
    gpu_info TEXT,
    session_info TEXT,
    last_seen DATETIME NOT NULL,
    status VARCHAR(8) NOT NULL {_enum_check('status', 'active', 'inactive')},
    version VARCHAR(50),
    hostname VARCHAR(255),
    {_json_check('cpu_info', False)},
    {_json_check('ram_info', False)},
    {_json_check('gpu_info')},
    {_json_check('session_info')}
)""",
    "CREATE INDEX clients_idx_status ON clients (status)",
    "CREATE INDEX clients_idx_last_seen ON clients (last_seen)",
    f"""
CREATE TABLE tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    type VARCHAR(255) NOT NULL,
    requirements TEXT NOT NULL,
    status VARCHAR(9) NOT NULL {_enum_check('status', 'pending', 'running', 'completed', 'failed', 'error')},
    client_id VARCHAR(255) REFERENCES clients (id) ON DELETE SET NULL,
    created_at DATETIME NOT NULL,
    updated_at DATETIME NOT NULL,
    result TEXT,
    error_log TEXT,
    priority INTEGER DEFAULT 0,
    config TEXT,
    checkpoint_path VARCHAR(255),
    {_json_check('requirements', False)},
    {_json_check('config')},
    {_json_check('result')}
)""",
    "CREATE INDEX tasks_idx_status ON tasks (status)",
    "CREATE INDEX tasks_idx_priority ON tasks (priority)",
    "CREATE INDEX tasks_idx_created_at ON tasks (created_at)",
    "CREATE INDEX tasks_fk_client_id ON tasks (client_id)",
    f"""
CREATE TABLE task_assignments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    client_id VARCHAR(255) NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    assigned_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    status VARCHAR(9) NOT NULL {_enum_check('status', 'assigned', 'training', 'completed', 'failed')},
    "rank" INTEGER NOT NULL,
    checkpoint_path VARCHAR(255),
    metrics TEXT,
    {_json_check('metrics')}
)""",
    "CREATE INDEX task_assignments_idx_task_status ON task_assignments (task_id, status)",
    "CREATE INDEX task_assignments_idx_client_status ON task_assignments (client_id, status)",
    'CREATE UNIQUE INDEX task_assignments_unique_assignment ON task_assignments (task_id, "rank")',
    """
CREATE TRIGGER task_assignments_on_update_updated_at
AFTER UPDATE ON task_assignments
FOR EACH ROW WHEN NEW.updated_at IS OLD.updated_at
BEGIN
    UPDATE task_assignments SET updated_at = CURRENT_TIMESTAMP WHERE id = NEW.id;
END""",
    f"""
CREATE TABLE checkpoints (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    client_id VARCHAR(255) REFERENCES clients (id) ON DELETE SET NULL,
    path VARCHAR(255) NOT NULL,
    type VARCHAR(11) NOT NULL {_enum_check('type', 'regular', 'distributed', 'emergency', 'final')},
    metrics TEXT,
    created_at DATETIME NOT NULL,
    {_json_check('metrics')}
)""",
    "CREATE INDEX checkpoints_idx_task_type ON checkpoints (task_id, type)",
    "CREATE INDEX checkpoints_fk_client_id ON checkpoints (client_id)",
    f"""
CREATE TABLE model_versions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name VARCHAR(255) NOT NULL,
    version VARCHAR(50) NOT NULL,
    url TEXT NOT NULL,
    config TEXT,
    hash VARCHAR(64),
    created_at DATETIME NOT NULL,
    {_json_check('config')}
)""",
    "CREATE UNIQUE INDEX model_versions_unique_version ON model_versions (name, version)",
    "CREATE INDEX model_versions_idx_name_version ON model_versions (name, version)",
    f"""
CREATE TABLE task_logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id INTEGER REFERENCES tasks (id) ON DELETE CASCADE,
    client_id VARCHAR(255) REFERENCES clients (id) ON DELETE CASCADE,
    log_type VARCHAR(7) NOT NULL {_enum_check('log_type', 'info', 'warning', 'error')},
    message TEXT NOT NULL,
    created_at DATETIME NOT NULL
)""",
    "CREATE INDEX task_logs_idx_task_time ON task_logs (task_id, created_at)",
    "CREATE INDEX task_logs_idx_client_time ON task_logs (client_id, created_at)",
    f"""
CREATE TABLE client_logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    client_id VARCHAR(255) REFERENCES clients (id) ON DELETE CASCADE,
    log_type VARCHAR(7) NOT NULL {_enum_check('log_type', 'info', 'warning', 'error')},
    message TEXT NOT NULL,
    created_at DATETIME NOT NULL
)""",
    "CREATE INDEX client_logs_idx_client_time ON client_logs (client_id, created_at)",
    """
CREATE TABLE performance_metrics (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    client_id VARCHAR(255) NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    task_id INTEGER REFERENCES tasks (id) ON DELETE CASCADE,
    metric_type VARCHAR(50) NOT NULL,
    value REAL NOT NULL,
    recorded_at DATETIME NOT NULL
)""",
    "CREATE INDEX performance_metrics_idx_client_time ON performance_metrics (client_id, recorded_at)",
    "CREATE INDEX performance_metrics_idx_task_time ON performance_metrics (task_id, recorded_at)",
]

TABLES_IN_DROP_ORDER = (
    "performance_metrics",
    "client_logs",
    "task_logs",
    "model_versions",
    "checkpoints",
    "task_assignments",
    "tasks",
    "clients",
)


def upgrade() -> None:
    statements = MYSQL if op.get_bind().dialect.name == "mysql" else SQLITE
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    for table in TABLES_IN_DROP_ORDER:
        op.execute(f"DROP TABLE {table}")
