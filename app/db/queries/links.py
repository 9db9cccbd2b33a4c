"""SQL about measured links between clients: the last throughput and latency from one client to another."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db import dialect
from app.db.schema import peer_links


@dataclass(frozen=True)
class LinkRow:
    """One measured direction between two clients."""

    from_client: str
    to_client: str
    mbit_per_s: float
    latency_ms: float
    measured_at: datetime


async def record(conn: AsyncConnection, from_client: str, to_client: str, mbit_per_s: float, latency_ms: float) -> None:
    """Keep this measurement as the link's latest (replacing the previous one)."""
    await conn.execute(delete(peer_links).where(peer_links.c.from_client == from_client,
                                                peer_links.c.to_client == to_client))
    await conn.execute(peer_links.insert().values(from_client=from_client, to_client=to_client, mbit_per_s=mbit_per_s,
                                                  latency_ms=latency_ms, measured_at=dialect.now(conn)))


async def among(conn: AsyncConnection, clients: Sequence[str]) -> list[LinkRow]:
    """Every measured direction between two of `clients`."""
    ids = list(clients)
    if len(ids) < 2:
        return []
    query = select(peer_links).where(peer_links.c.from_client.in_(ids), peer_links.c.to_client.in_(ids))
    return [LinkRow(**row) for row in (await conn.execute(query)).mappings()]


async def of_client(conn: AsyncConnection, client_id: str) -> list[LinkRow]:
    """Every measured direction from or to a client, newest first."""
    query = (select(peer_links).where(or_(peer_links.c.from_client == client_id, peer_links.c.to_client == client_id))
             .order_by(peer_links.c.measured_at.desc(), peer_links.c.from_client, peer_links.c.to_client))
    return [LinkRow(**row) for row in (await conn.execute(query)).mappings()]
