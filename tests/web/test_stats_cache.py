"""/api/v1/stats reads the farm's history once for every viewer within the cache's second."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.config import load_settings
from app.db.engine import create_database
from app.db.migrate import upgrade
from app.db.queries import tasks as task_queries
from app.web.keys import CACHE_KEY


async def test_stats_are_read_once_per_second_for_all_viewers(tmp_path: Path, sqlite_url: str, aiohttp_client: Any) -> None:
    """A second request within the cache's lifetime gets the same reading (a task added meanwhile is not in it);
    once the cache has expired the new task is counted."""
    from app.agent import Agent
    from app.web.app import create_dashboard_app

    db = create_database(sqlite_url)
    await upgrade(db)
    settings = load_settings(env={}, cli={"data_dir": str(tmp_path / "d")}, config_file=tmp_path / "none.toml")
    agent = Agent(settings, db)
    app = create_dashboard_app(agent._dashboard_deps())
    app[CACHE_KEY].ttl = 3600.0  # the test decides when the reading expires
    client = await aiohttp_client(app)
    client.session.headers["Authorization"] = f"Bearer {agent.api_token}"
    try:
        first = await (await client.get("/api/v1/stats")).json()
        async with db.begin() as conn:
            await task_queries.insert_task(conn, type="training", requirements={}, config={"name": "x"})
        second = await (await client.get("/api/v1/stats")).json()
        assert second == first
        app[CACHE_KEY].ttl = 0.0
        third = await (await client.get("/api/v1/stats")).json()
        assert third["tasks_by_status"].get("pending", 0) == first["tasks_by_status"].get("pending", 0) + 1
    finally:
        await db.dispose()
