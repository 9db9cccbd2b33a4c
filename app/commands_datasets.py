"""`aifarm datasets ...`: publish a dataset's shards from this machine, list, show and remove published datasets."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from app.cli_db import farm_database
from app.commands_outcomes import report
from app.config import Settings
from app.errors import ConfigError
from app.textui import format_table, print_json


class PublishOutcome(TypedDict):
    """`datasets publish`: the version registered and its shards."""

    name: str
    version: int
    kind: str
    shards: int
    bytes: int
    samples: int
    folder: str


class RemoveOutcome(TypedDict):
    """`datasets remove`: the versions removed from the farm database."""

    name: str
    versions: list[int]


@dataclass(frozen=True)
class Ref:
    """NAME or NAME:VERSION as typed."""

    name: str
    version: int | None


def parse_ref(text: str) -> Ref:
    """NAME[:VERSION]; ConfigError naming what is wrong."""
    from app.datasets.manifest import NAME

    name, _, version = text.partition(":")
    if not NAME.match(name):
        raise ConfigError(f"dataset name {name[:70]!r} is invalid: 1-64 letters, digits, '.', '_' or '-', "
                          "starting with a letter or digit")
    if version and (not version.isdigit() or not 1 <= int(version) <= 10**9):
        raise ConfigError(f"dataset version {version[:20]!r} is invalid: a whole number from 1")
    return Ref(name, int(version) if version else None)


async def publish_dataset(args: argparse.Namespace, settings: Settings) -> int:
    """`aifarm datasets publish PATH --name NAME`: build shards in this data dir and register them in the farm."""
    from app.datasets.publish import DEFAULT_SHARD_BYTES, PublishError, parse_size

    ref = parse_ref(args.name)
    if ref.version is not None:
        raise ConfigError("--name takes a name only; the version is assigned (1, 2, ...)")
    source = Path(args.path).expanduser()
    if not source.exists():
        raise ConfigError(f"{args.path} does not exist")
    try:
        shard_bytes = parse_size(args.shard_size) if args.shard_size else DEFAULT_SHARD_BYTES
    except PublishError as exc:
        raise ConfigError(str(exc)) from None
    client_id = await _publisher_id(settings)
    async with farm_database(settings.effective_database_url) as db:
        outcome = await _publish(db, settings.data_dir, client_id, source, ref.name, args.tokenizer, shard_bytes)
    report(args, outcome, f"published {outcome['name']} v{outcome['version']}: {outcome['shards']} shards "
                          f"({outcome['bytes'] / (1 << 20):.1f} MB, {outcome['samples']} {outcome['kind']} samples) "
                          f"in {outcome['folder']}",
           f'tasks name it with "dataset": "published", "dataset_options": {{"name": "{outcome["name"]}"}}')
    return 0


async def _publisher_id(settings: Settings) -> str:
    from app.identity import read_client_id

    client_id = read_client_id(settings.data_dir)
    if client_id is None:
        raise ConfigError(f"no agent has run with the data dir {settings.data_dir}: start `aifarm run` once, so that "
                          "this machine is a client of the farm whose peer API serves the shards")
    return client_id


async def _publish(db: object, data_dir: Path, client_id: str, source: Path, name: str, tokenizer: str,
                   shard_bytes: int) -> PublishOutcome:
    from app.datasets.manifest import dataset_folder
    from app.datasets.publish import PublishError, build
    from app.db.engine import Database
    from app.db.queries import clients as client_queries
    from app.db.queries import datasets as dataset_queries
    from app.db.queries.datasets import HELD

    assert isinstance(db, Database)
    async with db.connect() as conn:
        if await client_queries.get_client(conn, client_id) is None:
            raise ConfigError(f"this data dir's client {client_id} is not in the farm database: start `aifarm run` "
                              "with this data dir and database once")
    staging = data_dir / "datasets" / "published" / name / f".staging-{os.getpid()}"
    try:
        built = await asyncio.to_thread(build, source, staging, tokenizer=tokenizer, shard_bytes=shard_bytes)
        for _ in range(10):
            async with db.connect() as conn:
                version = await dataset_queries.next_version(conn, name)
            manifest = built.manifest(name, version)
            folder = dataset_folder(data_dir, name, version)
            if folder.exists():
                shutil.rmtree(folder)  # left by a publish that was never registered
            async with db.begin() as conn:
                dataset_id = await dataset_queries.register(
                    conn, name=name, version=version, kind=manifest.kind, manifest=manifest.to_json(),
                    total_bytes=manifest.total_bytes, publisher_id=client_id)
                if dataset_id is None:
                    continue
                for shard in manifest.shards:
                    await dataset_queries.set_copy(conn, dataset_id, shard.name, client_id, HELD)
                (staging / "manifest.json").write_text(json.dumps(manifest.to_json(), indent=1), encoding="utf-8")
                os.replace(staging, folder)
            return PublishOutcome(name=name, version=version, kind=manifest.kind, shards=len(manifest.shards),
                                  bytes=manifest.total_bytes, samples=manifest.samples, folder=str(folder))
        raise ConfigError(f"could not register a new version of dataset {name!r} (too many concurrent publishers)")
    except PublishError as exc:
        raise ConfigError(str(exc)) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


async def list_datasets(args: argparse.Namespace, settings: Settings) -> int:
    """`aifarm datasets list`: every published version with its size and how many clients hold it."""
    from app.db.queries import datasets as dataset_queries

    async with farm_database(settings.effective_database_url) as db, db.connect() as conn:
        rows = await dataset_queries.list_all(conn, args.name)
        holders = await dataset_queries.holder_counts(conn)
    if args.json:
        print_json([{"name": r.name, "version": r.version, "kind": r.kind, "bytes": r.total_bytes,
                     "shards": len(r.manifest.get("shards", [])) if isinstance(r.manifest, dict) else None,
                     "publisher_id": r.publisher_id, "holders": holders.get(r.id, 0), "created_at": r.created_at}
                    for r in rows])
        return 0
    if not rows:
        print("no published datasets (aifarm datasets publish PATH --name NAME)")
        return 0
    print(format_table(("NAME", "VERSION", "KIND", "SHARDS", "SIZE", "HOLDERS", "PUBLISHER", "CREATED"),
                       [(r.name, r.version, r.kind,
                         len(r.manifest.get("shards", [])) if isinstance(r.manifest, dict) else "?",
                         f"{r.total_bytes / (1 << 20):.1f} MB", holders.get(r.id, 0), r.publisher_id or "-",
                         r.created_at) for r in rows]))
    return 0


async def show_dataset(args: argparse.Namespace, settings: Settings) -> int:
    """`aifarm datasets show NAME[:VERSION]`: the manifest and which clients hold each shard."""
    from app.datasets.manifest import ManifestError, parse_manifest
    from app.db.queries import datasets as dataset_queries
    from app.db.queries.datasets import HELD

    ref = parse_ref(args.ref)
    async with farm_database(settings.effective_database_url) as db, db.connect() as conn:
        row = await dataset_queries.get(conn, ref.name, ref.version)
        if row is None:
            raise ConfigError(f"no published dataset {args.ref!r} (see `aifarm datasets list`)")
        copies = await dataset_queries.copies(conn, row.id)
    held: dict[str, list[str]] = {}
    for copy in copies:
        if copy.status == HELD:
            held.setdefault(copy.shard, []).append(copy.client_id)
    if args.json:
        print_json({"name": row.name, "version": row.version, "publisher_id": row.publisher_id,
                    "created_at": row.created_at, "manifest": row.manifest,
                    "holders": {k: sorted(v) for k, v in held.items()}})
        return 0
    try:
        manifest = parse_manifest(row.manifest)
    except ManifestError as exc:
        raise ConfigError(f"dataset {row.name} v{row.version} has a malformed manifest: {exc}") from None
    tokenizer = f"{manifest.tokenizer.type} ({manifest.tokenizer.vocab_size} ids)" if manifest.tokenizer else "-"
    print(f"{row.name} v{row.version}: {manifest.kind} ({manifest.dtype}), {len(manifest.shards)} shards, "
          f"{manifest.total_bytes / (1 << 20):.1f} MB, {manifest.samples} samples; tokenizer {tokenizer}; "
          f"published by {row.publisher_id or '-'} at {row.created_at}")
    print(format_table(("SHARD", "ROLE", "BYTES", "SAMPLES", "SHA256", "HOLDERS"),
                       [(s.name, s.role, s.bytes, s.samples, s.sha256[:16], len(held.get(s.name, [])))
                        for s in manifest.shards]))
    return 0


async def remove_dataset(args: argparse.Namespace, settings: Settings) -> int:
    """`aifarm datasets remove NAME[:VERSION]`: unregister it (every version without one) and delete local shards."""
    from app.datasets.manifest import dataset_folder
    from app.datasets.options import wanted
    from app.db.queries import datasets as dataset_queries

    ref = parse_ref(args.ref)
    async with farm_database(settings.effective_database_url) as db, db.begin() as conn:
        rows = [r for r in await dataset_queries.list_all(conn, ref.name)
                if ref.version is None or r.version == ref.version]
        if not rows:
            raise ConfigError(f"no published dataset {args.ref!r} (see `aifarm datasets list`)")
        for config in await dataset_queries.running_configs(conn):
            want = wanted(config) if isinstance(config, dict) else None
            if want is not None and want.name == ref.name and (ref.version is None or want.version in (None, ref.version)):
                raise ConfigError(f"dataset {args.ref!r} is named by a pending or running task; cancel it first")
        for row in rows:
            await dataset_queries.remove(conn, row.id)
    for row in rows:
        shutil.rmtree(dataset_folder(settings.data_dir, row.name, row.version), ignore_errors=True)
    versions = sorted(r.version for r in rows)
    report(args, RemoveOutcome(name=ref.name, versions=versions),
           f"removed dataset {ref.name} version{'s' if len(versions) > 1 else ''} {', '.join(map(str, versions))}")
    return 0
