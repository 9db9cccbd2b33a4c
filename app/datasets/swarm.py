"""Fetch a published dataset's shards before a worker starts: from peers that hold them, the publisher last.

Every shard comes through the signed peer API and is kept only when its sha256 matches the manifest. Several
shards are fetched at once; a shard some other client is already fetching from the publisher is waited for and
taken from that client, so that the publisher serves each shard about once. After an interruption, finished
shards are kept and a shard cut off half-way continues where it stopped (HTTP Range); copies are recorded in the
farm database so other agents can fetch from this one.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from app.datasets import cache
from app.datasets.manifest import Manifest, ManifestError, Shard, dataset_folder, parse_manifest, shard_ok
from app.datasets.options import Wanted, fit_problem, wanted
from app.db.queries import datasets as dataset_queries
from app.db.queries.datasets import FETCHING, HELD, DatasetRow, ShardCopy
from app.peerapi.client import ChecksumMismatch, PeerError
from app.peerfiles import PeerFiles

PARALLEL = 4
WORKER_STOP_SECONDS = 5.0  # when one shard fails, the other workers finish the database block they are in
WAIT_FOR_PEER_S = 60.0
POLL_S = 0.5
ROUNDS = 3
MANIFEST_FILE = "manifest.json"

TaskLog = Callable[[str, str], None]  # level, message


class DatasetUnusable(Exception):
    """The task cannot run on this dataset (unknown, malformed, does not fit, shards never match): no retry helps."""


class DatasetUnavailable(Exception):
    """Some shard could not be fetched now (holders unreachable); a later attempt may succeed."""


@dataclass
class _Tally:
    """What a fetch did: bytes received, shards per source, and shards this agent took on."""

    total_bytes: int
    received: int = 0
    from_publisher: int = 0
    from_peers: int = 0
    reported: int = 0
    taken: set[str] = field(default_factory=set)


class ShardSwarm:
    """Local, verified copies of the published datasets the tasks of this agent name."""

    def __init__(self, files: PeerFiles, log: TaskLog, cache_gb: float | None = None) -> None:
        self.files = files
        self.log = log
        self.cache_gb = cache_gb

    async def prepare(self, config: dict[str, object]) -> Path | None:
        """The local folder of the task's published dataset, fetched and verified (None for other datasets)."""
        want = wanted(dict(config))
        if want is None:
            return None
        row, manifest = await self._manifest(want)
        folder = dataset_folder(self.files.data_dir, manifest.name, manifest.version)
        missing = [s for s in manifest.shards if not await asyncio.to_thread(shard_ok, folder, s)]
        if missing:
            await self._forget(row, [s.name for s in missing])
            await self._fetch_all(row, manifest, folder, missing)
        _write_manifest(folder, manifest)
        async with self.files.db.begin() as conn:
            for shard in manifest.shards:
                await dataset_queries.set_copy(conn, row.id, shard.name, self.files.client_id, HELD)
        cache.touch(folder)
        if self.cache_gb is not None:
            await cache.evict(self.files, int(self.cache_gb * (1 << 30)), keep={folder}, log=self.log)
        return folder

    async def _manifest(self, want: Wanted) -> tuple[DatasetRow, Manifest]:
        shown = f"{want.name!r}" + (f" version {want.version}" if want.version is not None else "")
        async with self.files.db.connect() as conn:
            row = await dataset_queries.get(conn, want.name, want.version)
        if row is None:
            raise DatasetUnusable(f"config.dataset_options.name: no published dataset {shown}")
        try:
            manifest = parse_manifest(row.manifest)
        except ManifestError as exc:
            raise DatasetUnusable(f"config.dataset_options.name: dataset {shown} has a malformed manifest: {exc}") from None
        if (manifest.name, manifest.version) != (row.name, row.version):
            raise DatasetUnusable(f"config.dataset_options.name: dataset {shown}'s manifest names another dataset")
        problem = fit_problem(manifest, want)
        if problem is not None:
            raise DatasetUnusable(f"config.dataset_options.{problem[0]}: {problem[1]}")
        return row, manifest

    async def _forget(self, row: DatasetRow, shards: list[str]) -> None:
        """Shards missing or damaged here are no longer offered to other agents."""
        async with self.files.db.begin() as conn:
            await dataset_queries.drop_copies(conn, row.id, self.files.client_id, shards)

    async def _fetch_all(self, row: DatasetRow, manifest: Manifest, folder: Path, missing: list[Shard]) -> None:
        tally = _Tally(total_bytes=sum(s.bytes for s in missing))
        self.log("info", f"dataset {manifest.name} v{manifest.version}: fetching {len(missing)} of "
                         f"{len(manifest.shards)} shards ({_mb(tally.total_bytes)})")
        pending = {s.name: s for s in missing}
        workers = [asyncio.create_task(self._worker(row, folder, pending, tally), name=f"shards-{row.id}-{i}")
                   for i in range(min(PARALLEL, len(missing)))]
        try:
            await asyncio.gather(*workers)
        finally:
            await self.files.db.cancel_between_blocks(workers, WORKER_STOP_SECONDS)
        self.log("info", f"dataset {manifest.name} v{manifest.version}: {len(missing)} shards fetched and verified "
                         f"({_mb(tally.received)}): {tally.from_publisher} from the publisher, "
                         f"{tally.from_peers} from other peers")

    async def _worker(self, row: DatasetRow, folder: Path, pending: dict[str, Shard], tally: _Tally) -> None:
        while pending:
            async with self.files.db.connect() as conn:
                copies = await dataset_queries.copies(conn, row.id)
            if not pending:
                return  # the other workers took the last shards meanwhile
            shard = _pick(pending, copies, row.publisher_id, self.files.client_id)
            if shard is None:
                await asyncio.sleep(POLL_S)  # every remaining shard is on its way to another peer: wait for it
                continue
            del pending[shard.name]
            holders = _holders(shard, copies, row.publisher_id, self.files.client_id)
            if holders and holders[-1] == row.publisher_id and len(holders) == 1:
                async with self.files.db.begin() as conn:
                    await dataset_queries.set_copy(conn, row.id, shard.name, self.files.client_id, FETCHING)
            try:
                await self._fetch_shard(row, folder, shard, holders, tally)
            except BaseException:
                await asyncio.shield(self._forget(row, [shard.name]))
                raise
            async with self.files.db.begin() as conn:
                await dataset_queries.set_copy(conn, row.id, shard.name, self.files.client_id, HELD)

    async def _fetch_shard(self, row: DatasetRow, folder: Path, shard: Shard, holders: list[str], tally: _Tally) -> None:
        mismatched: set[str] = set()
        for round_ in range(ROUNDS):
            for holder in holders:
                if holder in mismatched:
                    continue
                if await self._download(row, folder, shard, holder, tally, mismatched):
                    if holder == row.publisher_id:
                        tally.from_publisher += 1
                    else:
                        tally.from_peers += 1
                    return
            if holders and mismatched >= set(holders):
                raise DatasetUnusable(f"config.dataset_options.name: shard {shard.name} of dataset {row.name} "
                                      f"v{row.version} does not match its manifest at any holder")
            await asyncio.sleep(1.0 + round_)
            async with self.files.db.connect() as conn:
                holders = _holders(shard, await dataset_queries.copies(conn, row.id), row.publisher_id,
                                   self.files.client_id)
        raise DatasetUnavailable(f"shard {shard.name} of dataset {row.name} v{row.version}: no holder could be reached")

    async def _download(self, row: DatasetRow, folder: Path, shard: Shard, holder: str, tally: _Tally,
                        mismatched: set[str]) -> bool:
        endpoint = await self.files.endpoint(holder)
        if endpoint is None:
            return False
        path = f"/peer/v1/datasets/{row.name}/{row.version}/{shard.name}"
        before = tally.received

        def progress(size: int, _total: int | None) -> None:
            tally.received = before + size
            self._report(row, tally)

        try:
            await self.files.client.download(endpoint[0], endpoint[1], path, folder / shard.name, shard.sha256,
                                             max_bytes=shard.bytes, progress=progress, resume=True)
        except ChecksumMismatch:
            mismatched.add(holder)
            tally.received = before
            self.log("warning", f"dataset {row.name} v{row.version}: shard {shard.name} from {holder} does not match "
                                "its sha256; refused, trying another holder")
            return False
        except PeerError as exc:
            tally.received = before
            self.log("info", f"dataset {row.name} v{row.version}: shard {shard.name} not fetched from {holder}: {exc}")
            return False
        tally.received = before + shard.bytes
        return True

    def _report(self, row: DatasetRow, tally: _Tally) -> None:
        """A progress line at every quarter of the bytes to fetch."""
        quarter = tally.received * 4 // max(1, tally.total_bytes)
        if quarter > tally.reported and quarter < 4:
            tally.reported = int(quarter)
            self.log("info", f"dataset {row.name} v{row.version}: {quarter * 25}% fetched "
                             f"({_mb(tally.received)} of {_mb(tally.total_bytes)})")


def _holders(shard: Shard, copies: list[ShardCopy], publisher: str | None, me: str) -> list[str]:
    """Who to ask for a shard: peers that hold it (in random order), then the publisher."""
    held = {c.client_id for c in copies if c.shard == shard.name and c.status == HELD and c.client_id != me}
    peers = sorted(held - {publisher})
    random.shuffle(peers)
    return peers + ([publisher] if publisher in held else [])


def _pick(pending: dict[str, Shard], copies: list[ShardCopy], publisher: str | None, me: str) -> Shard | None:
    """The next shard to fetch: one a peer other than the publisher holds, else one nobody is fetching, else None."""
    peer_held = {c.shard for c in copies if c.status == HELD and c.client_id not in (me, publisher)}
    in_flight = {c.shard for c in copies if c.status == FETCHING and c.client_id != me and c.age_seconds < WAIT_FOR_PEER_S}
    names = list(pending)
    for name in names:
        if name in peer_held:
            return pending[name]
    start = random.randrange(len(names))  # agents starting together spread over the shards
    for name in names[start:] + names[:start]:
        if name not in in_flight:
            return pending[name]
    return None


def _write_manifest(folder: Path, manifest: Manifest) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{MANIFEST_FILE}.{os.getpid()}.{time.monotonic_ns()}"
    tmp.write_text(json.dumps(manifest.to_json(), indent=1), encoding="utf-8")
    os.replace(tmp, folder / MANIFEST_FILE)


def _mb(size: int) -> str:
    return f"{size / (1 << 20):.1f} MB"
