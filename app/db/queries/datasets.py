"""SQL about published datasets: register a version, look one up, list, remove, and which clients hold which shards."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db import dialect
from app.db.schema import dataset_shard_copies, datasets, tasks

HELD = "held"
FETCHING = "fetching"


@dataclass(frozen=True)
class DatasetRow:
    """One registered version of a dataset."""

    id: int
    name: str
    version: int
    kind: str
    manifest: Any  # the stored JSON, parsed by app.datasets.manifest.parse_manifest
    total_bytes: int
    publisher_id: str | None
    created_at: datetime


@dataclass(frozen=True)
class ShardCopy:
    """A client that holds (or is fetching) one shard."""

    shard: str
    client_id: str
    status: str
    age_seconds: float


def _row(row: Any) -> DatasetRow:
    m = row._mapping
    return DatasetRow(id=m["id"], name=m["name"], version=m["version"], kind=m["kind"], manifest=m["manifest"],
                      total_bytes=int(m["total_bytes"]), publisher_id=m["publisher_id"], created_at=m["created_at"])


async def next_version(conn: AsyncConnection, name: str) -> int:
    """One more than the newest version of a name (1 for a new name)."""
    newest = (await conn.execute(select(func.max(datasets.c.version)).where(datasets.c.name == name))).scalar()
    return int(newest or 0) + 1


async def register(conn: AsyncConnection, *, name: str, version: int, kind: str, manifest: dict[str, Any],
                   total_bytes: int, publisher_id: str) -> int | None:
    """Insert a dataset version; None when that name and version exist already (the unique key decides)."""
    try:
        async with conn.begin_nested():
            result = await conn.execute(insert(datasets).values(
                name=name, version=version, kind=kind, manifest=manifest, total_bytes=total_bytes,
                publisher_id=publisher_id, created_at=dialect.now(conn)))
    except IntegrityError:
        return None
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


async def get(conn: AsyncConnection, name: str, version: int | None = None) -> DatasetRow | None:
    """A version of a dataset, or its newest when version is None."""
    query = select(datasets).where(datasets.c.name == name)
    if version is not None:
        query = query.where(datasets.c.version == version)
    row = (await conn.execute(query.order_by(datasets.c.version.desc()).limit(1))).first()
    return _row(row) if row is not None else None


async def list_all(conn: AsyncConnection, name: str | None = None) -> list[DatasetRow]:
    """Every registered version (of one name, or all), by name, newest first."""
    query = select(datasets).order_by(datasets.c.name, datasets.c.version.desc())
    if name is not None:
        query = query.where(datasets.c.name == name)
    return [_row(r) for r in (await conn.execute(query)).all()]


async def remove(conn: AsyncConnection, dataset_id: int) -> bool:
    """Delete a version and its copy records; False when it was not there."""
    await conn.execute(delete(dataset_shard_copies).where(dataset_shard_copies.c.dataset_id == dataset_id))
    result = await conn.execute(delete(datasets).where(datasets.c.id == dataset_id))
    return bool(result.rowcount)


async def set_copy(conn: AsyncConnection, dataset_id: int, shard: str, client_id: str, status: str) -> None:
    """Record that a client holds, or is fetching, a shard."""
    now = dialect.now(conn)
    await conn.execute(dialect.upsert(conn, dataset_shard_copies,
                                      {"dataset_id": dataset_id, "shard": shard, "client_id": client_id,
                                       "status": status, "updated_at": now},
                                      {"status": status, "updated_at": now}))


async def drop_copies(conn: AsyncConnection, dataset_id: int, client_id: str, shards: list[str] | None = None) -> None:
    """Forget a client's copies of a dataset's shards (all of them when shards is None)."""
    query = delete(dataset_shard_copies).where(dataset_shard_copies.c.dataset_id == dataset_id,
                                               dataset_shard_copies.c.client_id == client_id)
    if shards is not None:
        query = query.where(dataset_shard_copies.c.shard.in_(shards))
    await conn.execute(query)


async def copies(conn: AsyncConnection, dataset_id: int) -> list[ShardCopy]:
    """Every client's copy record of a dataset's shards, with how long ago it was written."""
    age = dialect.seconds_between(conn, dataset_shard_copies.c.updated_at, dialect.now(conn))
    query = select(dataset_shard_copies.c.shard, dataset_shard_copies.c.client_id, dataset_shard_copies.c.status,
                   age.label("age")).where(dataset_shard_copies.c.dataset_id == dataset_id)
    return [ShardCopy(r.shard, r.client_id, r.status, float(r.age or 0)) for r in (await conn.execute(query)).all()]


async def holder_counts(conn: AsyncConnection) -> dict[int, int]:
    """How many distinct clients hold at least one shard, per dataset id."""
    query = (select(dataset_shard_copies.c.dataset_id, func.count(func.distinct(dataset_shard_copies.c.client_id)))
             .where(dataset_shard_copies.c.status == HELD).group_by(dataset_shard_copies.c.dataset_id))
    return {int(r[0]): int(r[1]) for r in (await conn.execute(query)).all()}


async def running_configs(conn: AsyncConnection) -> list[Any]:
    """The configs of tasks that are running or waiting (the datasets they name are in use)."""
    query = select(tasks.c.config).where(tasks.c.status.in_(("pending", "running")))
    return list((await conn.execute(query)).scalars())


async def touch_copy(conn: AsyncConnection, dataset_id: int, client_id: str) -> None:
    """Refresh the time of a client's copy records of a dataset (it was used)."""
    await conn.execute(update(dataset_shard_copies)
                       .where(dataset_shard_copies.c.dataset_id == dataset_id,
                              dataset_shard_copies.c.client_id == client_id)
                       .values(updated_at=dialect.now(conn)))
