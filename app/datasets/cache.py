"""The disk that fetched dataset shards may take (`dataset_cache_gb`): least recently used datasets go first, never
one that a pending or running task names, nor one this agent published."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from app.datasets.manifest import PUBLISHED_DIR
from app.datasets.options import wanted
from app.db.queries import datasets as dataset_queries
from app.peerfiles import PeerFiles

LAST_USED = ".last_used"


@dataclass(frozen=True)
class CachedDataset:
    """One dataset version held in this data dir."""

    name: str
    version: int
    folder: Path
    size: int
    last_used: float


def touch(folder: Path) -> None:
    """Mark a dataset folder as used now."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / LAST_USED
    marker.touch()
    now = time.time()
    os.utime(marker, (now, now))


def held(data_dir: Path) -> list[CachedDataset]:
    """Every dataset version in this data dir, least recently used first."""
    root = data_dir / "datasets" / PUBLISHED_DIR
    out: list[CachedDataset] = []
    for folder in root.glob("*/*") if root.is_dir() else ():
        if not folder.is_dir() or not folder.name.isdigit():
            continue
        size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
        marker = folder / LAST_USED
        used = marker.stat().st_mtime if marker.exists() else folder.stat().st_mtime
        out.append(CachedDataset(folder.parent.name, int(folder.name), folder, size, used))
    return sorted(out, key=lambda d: d.last_used)


async def evict(files: PeerFiles, limit_bytes: int, *, keep: set[Path], log: Callable[[str, str], None]) -> list[str]:
    """Remove least recently used datasets until the cache fits limit_bytes; returns 'name vN' of each removed."""
    cached = await asyncio.to_thread(held, files.data_dir)
    total = sum(d.size for d in cached)
    if total <= limit_bytes:
        return []
    async with files.db.connect() as conn:
        configs = await dataset_queries.running_configs(conn)
        rows = {(r.name, r.version): r for r in await dataset_queries.list_all(conn)}
    in_use: set[tuple[str, int | None]] = set()
    for config in configs:
        want = wanted(config) if isinstance(config, dict) else None
        if want is not None:
            in_use.add((want.name, want.version))
    removed: list[str] = []
    for item in cached:
        if total <= limit_bytes:
            break
        row = rows.get((item.name, item.version))
        newest = max((v for (n, v) in rows if n == item.name), default=None)
        needed = (item.name, item.version) in in_use or ((item.name, None) in in_use and item.version == newest)
        if item.folder in keep or needed or (row is not None and row.publisher_id == files.client_id):
            continue
        if row is not None:
            async with files.db.begin() as conn:
                await dataset_queries.drop_copies(conn, row.id, files.client_id)
        await asyncio.to_thread(shutil.rmtree, item.folder, True)
        total -= item.size
        removed.append(f"{item.name} v{item.version}")
        log("info", f"dataset cache: removed {item.name} v{item.version} ({item.size / (1 << 20):.1f} MB, "
                    f"least recently used) to stay within dataset_cache_gb")
    return removed
