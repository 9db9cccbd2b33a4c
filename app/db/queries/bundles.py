"""SQL about recipe bundles: the signed manifests organisers publish, their revocation, and the tasks naming them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db import dialect
from app.db.schema import bundles, tasks


@dataclass(frozen=True)
class BundleRow:
    """One published bundle version."""

    name: str
    version: str
    sha256: str
    key_fingerprint: str
    public_key: str
    signature: str
    manifest: str
    publisher_id: str | None
    published_at: datetime | None
    revoked_at: datetime | None

    @property
    def ref(self) -> str:
        """NAME==VERSION."""
        return f"{self.name}=={self.version}"


def _row(row: Any) -> BundleRow:
    return BundleRow(row.name, row.version, row.sha256, row.key_fingerprint, row.public_key, row.signature,
                     row.manifest, row.publisher_id, row.published_at, row.revoked_at)


_COLUMNS = (bundles.c.name, bundles.c.version, bundles.c.sha256, bundles.c.key_fingerprint, bundles.c.public_key,
            bundles.c.signature, bundles.c.manifest, bundles.c.publisher_id, bundles.c.published_at,
            bundles.c.revoked_at)


async def insert(conn: AsyncConnection, row: BundleRow) -> bool:
    """Register a bundle version; False when that name and version exist already."""
    try:
        async with conn.begin_nested():
            await conn.execute(bundles.insert().values(
                name=row.name, version=row.version, sha256=row.sha256, key_fingerprint=row.key_fingerprint,
                public_key=row.public_key, signature=row.signature, manifest=row.manifest,
                publisher_id=row.publisher_id, published_at=dialect.now(conn)))
    except IntegrityError:
        return False
    return True


async def get(conn: AsyncConnection, name: str, version: str) -> BundleRow | None:
    """One bundle version."""
    row = (await conn.execute(select(*_COLUMNS).where(bundles.c.name == name, bundles.c.version == version))).first()
    return _row(row) if row is not None else None


async def versions(conn: AsyncConnection, name: str) -> list[BundleRow]:
    """Every version of a bundle, newest first."""
    rows = await conn.execute(select(*_COLUMNS).where(bundles.c.name == name)
                              .order_by(bundles.c.published_at.desc(), bundles.c.id.desc()))
    return [_row(r) for r in rows]


async def list_all(conn: AsyncConnection) -> list[BundleRow]:
    """Every published bundle version, by name then newest first."""
    rows = await conn.execute(select(*_COLUMNS).order_by(bundles.c.name, bundles.c.id.desc()))
    return [_row(r) for r in rows]


async def by_fingerprint(conn: AsyncConnection, fingerprint: str) -> list[BundleRow]:
    """The bundle versions signed by one key."""
    rows = await conn.execute(select(*_COLUMNS).where(bundles.c.key_fingerprint == fingerprint)
                              .order_by(bundles.c.name, bundles.c.id.desc()))
    return [_row(r) for r in rows]


async def revoke(conn: AsyncConnection, name: str, version: str) -> bool:
    """Mark a bundle version revoked; False when it was revoked already or does not exist."""
    result = await conn.execute(update(bundles).where(bundles.c.name == name, bundles.c.version == version,
                                                      bundles.c.revoked_at.is_(None))
                                .values(revoked_at=dialect.now(conn)))
    return bool(result.rowcount)


async def revoked_refs(conn: AsyncConnection) -> set[str]:
    """NAME==VERSION of every revoked bundle."""
    rows = await conn.execute(select(bundles.c.name, bundles.c.version).where(bundles.c.revoked_at.is_not(None)))
    return {f"{r.name}=={r.version}" for r in rows}


async def pending_task_refs(conn: AsyncConnection, limit: int = 100) -> list[tuple[int, str]]:
    """(task id, bundle ref) of pending tasks that name a bundle."""
    ref = dialect.json_text(conn, tasks.c.config, "$.bundle")
    rows = await conn.execute(select(tasks.c.id, ref.label("ref"))
                              .where(tasks.c.status == "pending", ref.is_not(None)).order_by(tasks.c.id).limit(limit))
    return [(int(r.id), str(r.ref)) for r in rows]
