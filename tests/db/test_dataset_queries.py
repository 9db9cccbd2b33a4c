"""Published datasets in the farm database (SQLite and MariaDB): versions, shard copies, removal, cache eviction."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from app.datasets import cache
from app.datasets.manifest import Manifest, Shard, dataset_folder, parse_manifest
from app.db.engine import Database
from app.db.queries import datasets as dataset_queries
from app.db.queries import tasks as task_queries
from app.db.queries.datasets import FETCHING, HELD
from app.peerfiles import PeerFiles
from tests.db.test_queries import add_client


def manifest(name: str, version: int, shards: int = 2) -> dict[str, Any]:
    """A token dataset's manifest with `shards` shards of 8 tokens."""
    return Manifest(name, version, "tokens", "uint16",
                    tuple(Shard(f"shard-{i:05d}.bin", "tokens", i, 16, 8, f"{i:064x}") for i in range(shards))).to_json()


async def register(db: Database, name: str, publisher: str) -> int:
    async with db.begin() as conn:
        version = await dataset_queries.next_version(conn, name)
        dataset_id = await dataset_queries.register(conn, name=name, version=version, kind="tokens",
                                                    manifest=manifest(name, version), total_bytes=32,
                                                    publisher_id=publisher)
    assert dataset_id is not None
    return dataset_id


async def test_versions_copies_and_removal(db: Database) -> None:
    """Versions count up per name; a name and version is registered once; copies are per client; removal cascades."""
    async with db.begin() as conn:
        await add_client(conn, "pub")
        await add_client(conn, "peer")
    first = await register(db, "docs", "pub")
    second = await register(db, "docs", "pub")
    async with db.begin() as conn:
        assert await dataset_queries.register(conn, name="docs", version=2, kind="tokens", manifest=manifest("docs", 2),
                                              total_bytes=32, publisher_id="pub") is None
        newest = await dataset_queries.get(conn, "docs")
        assert newest is not None and newest.id == second and newest.version == 2
        assert parse_manifest(newest.manifest).shards[1].sha256 == f"{1:064x}"
        assert (await dataset_queries.get(conn, "docs", 1)).id == first  # type: ignore[union-attr]
        assert await dataset_queries.get(conn, "docs", 3) is None
        await dataset_queries.set_copy(conn, second, "shard-00000.bin", "pub", HELD)
        await dataset_queries.set_copy(conn, second, "shard-00000.bin", "peer", FETCHING)
        await dataset_queries.set_copy(conn, second, "shard-00000.bin", "peer", HELD)
    async with db.connect() as conn:
        copies = await dataset_queries.copies(conn, second)
        assert sorted((c.client_id, c.status) for c in copies) == [("peer", HELD), ("pub", HELD)]
        assert all(0 <= c.age_seconds < 60 for c in copies)
        assert await dataset_queries.holder_counts(conn) == {second: 2}
    async with db.begin() as conn:
        await dataset_queries.drop_copies(conn, second, "peer", ["shard-00000.bin"])
        assert [c.client_id for c in await dataset_queries.copies(conn, second)] == ["pub"]
        assert await dataset_queries.remove(conn, second)
        assert not await dataset_queries.remove(conn, second)
        assert await dataset_queries.copies(conn, second) == []
        assert [r.version for r in await dataset_queries.list_all(conn, "docs")] == [1]


async def test_cache_evicts_least_recently_used_datasets_no_task_needs(db: Database, tmp_path: Path) -> None:
    """Over the limit, the oldest unneeded copy goes first; a dataset a pending task names, or one this machine
    published, stays."""
    async with db.begin() as conn:
        await add_client(conn, "me")
        await add_client(conn, "pub")
    ids = {name: await register(db, name, "me" if name == "mine" else "pub") for name in ("old", "named", "mine", "new")}
    for age, name in enumerate(("mine", "named", "old", "new")):
        folder = dataset_folder(tmp_path, name, 1)
        folder.mkdir(parents=True)
        (folder / "shard-00000.bin").write_bytes(bytes(1000))
        cache.touch(folder)
        marker = folder / cache.LAST_USED
        os.utime(marker, (1000 + age, 1000 + age))
    async with db.begin() as conn:
        await dataset_queries.set_copy(conn, ids["old"], "shard-00000.bin", "me", HELD)
        await task_queries.insert_task(conn, type="training", requirements={}, priority=0, config={
            "dataset": "published", "dataset_options": {"name": "named"}})
    files = PeerFiles(tmp_path, "me", "host", db, None, None, lambda *_: None)  # type: ignore[arg-type]
    logged: list[str] = []
    removed = await cache.evict(files, 3000, keep=set(), log=lambda _level, text: logged.append(text))
    assert removed == ["old v1"]
    assert not dataset_folder(tmp_path, "old", 1).exists()
    for name in ("mine", "named", "new"):
        assert dataset_folder(tmp_path, name, 1).exists()
    async with db.connect() as conn:
        assert await dataset_queries.copies(conn, ids["old"]) == []
    assert "least recently used" in logged[0]
    assert await cache.evict(files, 10_000, keep=set(), log=lambda *_: None) == []
