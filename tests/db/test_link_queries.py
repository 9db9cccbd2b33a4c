"""Measured links between clients, on SQLite and MariaDB."""

from __future__ import annotations

from app.db.engine import Database
from app.db.queries import links as link_queries
from app.scheduling.decide import Link, slowest_link
from tests.db.test_queries import add_client


async def test_a_link_keeps_its_latest_measurement_and_the_group_reads_its_slowest(db: Database) -> None:
    async with db.begin() as conn:
        for client in ("a", "b", "c", "outsider"):
            await add_client(conn, client)
        await link_queries.record(conn, "a", "b", 900.0, 0.5)
        await link_queries.record(conn, "a", "b", 94.0, 1.5)  # replaces the first
        await link_queries.record(conn, "b", "c", 400.0, 3.0)
        await link_queries.record(conn, "c", "outsider", 1.0, 90.0)
    async with db.connect() as conn:
        group = await link_queries.among(conn, ["a", "b", "c"])
        of_a = await link_queries.of_client(conn, "a")
        alone = await link_queries.among(conn, ["a"])
    assert sorted((r.from_client, r.to_client, r.mbit_per_s, r.latency_ms) for r in group) == [
        ("a", "b", 94.0, 1.5), ("b", "c", 400.0, 3.0)]
    assert [(r.from_client, r.to_client) for r in of_a] == [("a", "b")] and alone == []
    assert slowest_link([(r.mbit_per_s, r.latency_ms) for r in group]) == Link(94.0, 0.003)


async def test_links_go_with_their_clients(db: Database) -> None:
    from sqlalchemy import delete

    from app.db.schema import clients

    async with db.begin() as conn:
        await add_client(conn, "a")
        await add_client(conn, "b")
        await link_queries.record(conn, "a", "b", 10.0, 1.0)
        await conn.execute(delete(clients).where(clients.c.id == "b"))
    async with db.connect() as conn:
        assert await link_queries.of_client(conn, "a") == []
