"""database_stats and agent_view on SQLite and MariaDB."""

from __future__ import annotations

from pathlib import Path

from app.db.engine import Database
from app.operations.monitor import PERFORMANCE_SCHEMA_OFF, agent_view, database_stats
from tests.operations import db_snapshot, populate

ROW_TABLES = ("clients", "tasks", "task_assignments", "checkpoints", "client_logs", "performance_metrics",
              "model_versions", "farms", "alembic_version")


async def test_database_stats_counts_rows(db: Database) -> None:
    """Every table is listed with its row count; MariaDB without performance_schema says how to enable it."""
    await populate(db)
    rows = {name: len(items) for name, items in (await db_snapshot(db)).items()}
    if db.dialect == "mysql":
        async with db.begin() as conn:
            for name in rows:
                await conn.exec_driver_sql(f"ANALYZE TABLE `{name}`")  # InnoDB's table_rows is an estimate
        stats = await database_stats(db, exact_counts=True)
        assert stats["backend"] == "mysql" and stats["database"] == db.url.database
        for item in stats["tables"]:
            assert set(item) == {"table_name", "table_rows", "data_size_mb", "index_size_mb", "rows"}
            assert isinstance(item["data_size_mb"], float) and item["data_size_mb"] > 0
            assert isinstance(item["index_size_mb"], float)
        assert {t["table_name"]: t["rows"] for t in stats["tables"]} == rows
        estimates = {t["table_name"]: t["table_rows"] for t in stats["tables"]}
        assert all(estimates[name] == rows[name] for name in ROW_TABLES), estimates
        assert stats["slow_queries"] == {"available": False, "message": PERFORMANCE_SCHEMA_OFF}
        assert "performance_schema=ON" in stats["slow_queries"]["message"]
    else:
        stats = await database_stats(db)
        path = Path(db.url.database or "")
        assert stats["backend"] == "sqlite" and stats["path"] == str(path)
        assert stats["page_size"] >= 512 and stats["page_count"] > 0 and stats["journal_mode"] == "wal"
        assert stats["file_size_bytes"] == path.stat().st_size > 0
        assert stats["wal_size_bytes"] >= 0 and stats["freelist_count"] >= 0
        assert {t["table_name"]: t["table_rows"] for t in stats["tables"]} == rows
        assert stats["slow_queries"]["available"] is False
    assert all(rows[name] > 0 for name in ROW_TABLES)


async def test_agent_view(db: Database) -> None:
    """The median of five SELECT 1 round trips and the pool's status, with nothing left checked out."""
    view = await agent_view(db)
    assert 0 < view["round_trip_ms"] < 1000 and len(view["round_trip_samples_ms"]) == 5
    assert isinstance(view["pool"]["status"], str) and view["pool"]["status"]
    assert view["pool"]["checked_out"] == 0
