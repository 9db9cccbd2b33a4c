"""The Operations command bodies (app/commands_ops.py), called as the CLI calls them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from app.commands_ops import db_backup, db_restore, db_stats, maintenance_run
from app.db.engine import create_database
from app.db.migrate import upgrade
from app.errors import Conflict
from tests.operations import db_snapshot, make_settings, populate


async def test_maintenance_backup_restore_and_stats_commands(tmp_path: Path, database_url: str,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """maintenance run (dry, json), db stats (text, json), db backup, db restore (refused, then --force)."""
    db = create_database(database_url)
    await upgrade(db)
    await populate(db)
    expected = await db_snapshot(db)
    await db.dispose()
    settings = make_settings(tmp_path, database_url=database_url)

    assert await maintenance_run(argparse.Namespace(dry_run=True, json=False), settings) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "inactive_clients: would mark inactive 0 clients"
    assert lines[-1] == "old_metrics: would delete 0 performance_metrics, 0 task_metrics"
    assert await maintenance_run(argparse.Namespace(dry_run=False, json=True), settings) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dry_run"] is False and report["sweeps"]["old_logs"] == {"skipped": (
        report["sweeps"]["old_logs"]["skipped"])} and "some-agent" in report["sweeps"]["old_logs"]["skipped"]
    assert report["sweeps"]["old_tasks"]["tasks"] == 0

    assert await db_stats(argparse.Namespace(json=False), settings) == 0
    out = capsys.readouterr().out
    assert "clients" in out and "round trip (median of 5 SELECT 1)" in out
    assert ("performance_schema=ON" in out) == database_url.startswith("mysql")
    assert await db_stats(argparse.Namespace(json=True), settings) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["agent_view"]["round_trip_ms"] > 0 and stats["tables"]

    dump = tmp_path / "farm.backup.gz"
    assert await db_backup(argparse.Namespace(file=str(dump)), settings) == 0
    assert str(dump) in capsys.readouterr().out
    with pytest.raises(Conflict):
        await db_restore(argparse.Namespace(file=str(dump), force=False), settings)
    assert await db_restore(argparse.Namespace(file=str(dump), force=True), settings) == 0
    assert "replacing" in capsys.readouterr().out
    db = create_database(database_url)
    try:
        after = await db_snapshot(db)
    finally:
        await db.dispose()
    # The forced maintenance run above wrote its results before the backup; everything else is as populated.
    after.pop("maintenance_runs")
    expected.pop("maintenance_runs")
    assert after == expected
