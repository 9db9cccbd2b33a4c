"""SQL about farms: the shared secret of a farm name, created once by whichever agent comes first."""

from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db import dialect
from app.db.schema import farms


async def get_secret(conn: AsyncConnection, name: str) -> str | None:
    """The farm's secret, or None when no agent of that farm has started yet."""
    return (await conn.execute(select(farms.c.secret).where(farms.c.name == name))).scalar_one_or_none()


async def ensure_secret(conn: AsyncConnection, name: str) -> str:
    """The farm's secret, created atomically on first use (the primary key decides a race)."""
    existing = await get_secret(conn, name)
    if existing is not None:
        return existing
    try:
        async with conn.begin_nested():
            await conn.execute(farms.insert().values(name=name, secret=secrets.token_hex(32), created_at=dialect.now(conn)))
    except IntegrityError:
        pass
    secret = await get_secret(conn, name)
    assert secret is not None
    return secret


async def list_farms(conn: AsyncConnection) -> list[str]:
    """Every farm name registered in this database."""
    return list((await conn.execute(select(farms.c.name).order_by(farms.c.name))).scalars())
