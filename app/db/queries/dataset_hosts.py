"""SQL about a farm's dataset hosts: the hosts its tasks may download datasets from, set by the organiser."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db import dialect
from app.db.schema import farm_dataset_hosts


async def list_hosts(conn: AsyncConnection, farm_name: str) -> list[str]:
    """The farm's dataset hosts, sorted by code point (the same order on every backend and collation)."""
    query = select(farm_dataset_hosts.c.host).where(farm_dataset_hosts.c.farm_name == farm_name)
    return sorted((await conn.execute(query)).scalars())


async def add_host(conn: AsyncConnection, farm_name: str, host: str) -> bool:
    """Add a host (already normalised); False when it was there already."""
    try:
        async with conn.begin_nested():
            await conn.execute(farm_dataset_hosts.insert().values(farm_name=farm_name, host=host, added_at=dialect.now(conn)))
    except IntegrityError:
        return False
    return True


async def remove_host(conn: AsyncConnection, farm_name: str, host: str) -> bool:
    """Remove a host; False when it was not there."""
    result = await conn.execute(delete(farm_dataset_hosts).where(
        farm_dataset_hosts.c.farm_name == farm_name, farm_dataset_hosts.c.host == host))
    return bool(result.rowcount)
