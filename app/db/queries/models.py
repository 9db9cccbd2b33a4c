"""SQL about model_versions: register the next version of a name, list, look up."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db import dialect
from app.db.queries import row_dict
from app.db.schema import model_versions


def _as_int(version: str) -> int:
    return int(version) if version.isdigit() else 0


async def register(conn: AsyncConnection, *, name: str, url: str, config: dict[str, Any], sha256: str) -> str:
    """Insert the next version ("1", "2", ...) of a model name; the unique key decides a race."""
    for _ in range(10):
        versions = (await conn.execute(select(model_versions.c.version).where(model_versions.c.name == name))).scalars()
        version = str(max((_as_int(v) for v in versions), default=0) + 1)
        try:
            async with conn.begin_nested():
                await conn.execute(insert(model_versions).values(
                    name=name, version=version, url=url, config=config, hash=sha256, created_at=dialect.now(conn)))
            return version
        except IntegrityError:
            continue
    raise RuntimeError(f"could not register a new version of {name!r}")


async def list_versions(conn: AsyncConnection, name: str | None = None, limit: int | None = None,
                        offset: int = 0) -> list[dict[str, Any]]:
    """Versions (of one name, or all; optionally a page), by name, newest first."""
    query = select(model_versions).order_by(model_versions.c.name, model_versions.c.id.desc())
    if limit is not None:
        query = query.limit(limit).offset(offset)
    if name:
        query = query.where(model_versions.c.name == name)
    return [row_dict(r) for r in await conn.execute(query)]


async def get_version(conn: AsyncConnection, name: str, version: str | None) -> dict[str, Any] | None:
    """One version, or the newest of a name when version is None."""
    rows = await list_versions(conn, name)
    if version is None:
        return rows[0] if rows else None
    return next((r for r in rows if r["version"] == version), None)


async def add_replica(conn: AsyncConnection, version_id: int, client_id: str) -> None:
    """Note in config.replicas that another client holds a verified copy."""
    row = (await conn.execute(select(model_versions.c.config).where(model_versions.c.id == version_id))).first()
    if row is None:
        return
    config = dict(row.config or {})
    replicas = [r for r in config.get("replicas", []) if r != client_id] + [client_id]
    config["replicas"] = replicas
    await conn.execute(update(model_versions).where(model_versions.c.id == version_id).values(config=config))


async def without_replica(conn: AsyncConnection, limit: int = 50) -> list[dict[str, Any]]:
    """The newest versions that no other client holds a copy of yet (config.replicas empty)."""
    rows = await conn.execute(select(model_versions).order_by(model_versions.c.id.desc()).limit(limit))
    return [row_dict(r) for r in rows if not (r.config or {}).get("replicas")]


async def claim_replication(conn: AsyncConnection, version_id: int, client_id: str, now: float, stale_after: float) -> bool:
    """Take the job of copying a version (config.replicating), unless it has a replica or another client's fresh claim."""
    row = (await conn.execute(select(model_versions.c.config).where(model_versions.c.id == version_id)
                              .with_for_update())).first()
    if row is None:
        return False
    config = dict(row.config or {})
    found = config.get("replicating")
    claim: dict[str, Any] = found if isinstance(found, dict) else {}
    taken = claim.get("client_id") not in (None, client_id) and now - float(claim.get("at") or 0) < stale_after
    if config.get("replicas") or taken:
        return False
    config["replicating"] = {"client_id": client_id, "at": now}
    await conn.execute(update(model_versions).where(model_versions.c.id == version_id).values(config=config))
    return True


async def count_versions(conn: AsyncConnection, name: str | None = None) -> int:
    """How many versions (of one name, or all)."""
    from sqlalchemy import func

    query = select(func.count()).select_from(model_versions)
    if name:
        query = query.where(model_versions.c.name == name)
    return int((await conn.execute(query)).scalar_one())
