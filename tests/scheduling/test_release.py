"""Work given back while its run is still being prepared never starts a worker, and the task is re-queued."""

from __future__ import annotations

from pathlib import Path

from app.config import load_settings
from app.db.engine import create_database
from app.db.migrate import upgrade
from app.db.queries import tasks as task_queries
from app.scheduling import claiming


async def test_a_release_before_the_worker_starts_requeues_without_a_worker(tmp_path: Path, sqlite_url: str) -> None:
    """Pause right after a claim formed (the run not built yet): no worker log, the task pending, not failed."""
    from app.agent import Agent

    db = create_database(sqlite_url)
    await upgrade(db)
    settings = load_settings(env={}, cli={"data_dir": str(tmp_path / "d")}, config_file=tmp_path / "none.toml")
    agent = Agent(settings, db)
    try:
        await agent.heartbeat.register()
        async with db.begin() as conn:
            task_id = await task_queries.insert_task(conn, type="training", requirements={}, config={
                "name": "prepared", "model": "mlp", "dataset": "synthetic", "epochs": 1, "batch_size": 32,
                "learning_rate": 0.01, "optimizer": "adam"})
            claim = await claiming.claim_next(conn, agent.client_id, agent.donation.capacity())
        assert claim is not None and claim.formation is not None and claim.task_id == task_id
        scheduler = agent.scheduler
        scheduler._start(claim.formation)  # as a claim that formed the group does
        await scheduler.release_current("the volunteer paused donation")
        assert scheduler.current is None and not scheduler.busy
        async with db.connect() as conn:
            row = await task_queries.get_task(conn, task_id)
        assert row is not None and row["status"] == "pending"
        assert "the volunteer paused donation" in (row["error_log"] or "")
        logs = tmp_path / "d" / "logs"
        assert not logs.exists() or not list(logs.glob("task-*.log"))
    finally:
        await db.dispose()
