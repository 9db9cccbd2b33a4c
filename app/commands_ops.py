"""The bodies of the Operations subcommands (maintenance, db stats/backup/restore/create-agent-user); each returns an exit code."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from app.cli_db import farm_database
from app.commands_outcomes import BackupOutcome, RestoreOutcome, report
from app.config import Settings
from app.errors import ValidationError
from app.textui import format_table, print_json


def _admin_url(settings: Settings) -> str:
    """The URL for schema changes and bulk deletes: admin_database_url when set, else the farm's URL."""
    return settings.admin_database_url or settings.effective_database_url


async def maintenance_run(args: argparse.Namespace, settings: Settings) -> int:
    """`aifarm maintenance run [--dry-run] [--json]`: run every sweep now, one line per sweep with its counts."""
    from app.operations.maintenance import Maintenance, describe_counts

    async with AsyncExitStack() as opened:
        db = await opened.enter_async_context(farm_database(settings.effective_database_url))
        admin_db = None
        if settings.admin_database_url:
            admin_db = await opened.enter_async_context(farm_database(settings.admin_database_url, require="any"))
        holder = f"cli-{socket.gethostname()}-{os.getpid()}"
        results = await Maintenance(db, settings, holder, admin_db).run_all(dry_run=bool(args.dry_run), force=True)
    if args.json:
        print_json({"dry_run": bool(args.dry_run), "sweeps": results}, sys.stdout)
        return 0
    for sweep, counts in results.items():
        print(describe_counts(sweep, counts, dry_run=bool(args.dry_run)))
    return 1 if any("error" in counts for counts in results.values()) else 0


async def db_stats(args: argparse.Namespace, settings: Settings) -> int:
    """`aifarm db stats [--json]`: table sizes, slow queries (or why there are none) and this process's view."""
    from app.operations.monitor import agent_view, database_stats

    async with farm_database(settings.effective_database_url, require="reachable") as db:
        stats = await database_stats(db)
        view = await agent_view(db)
    stats["agent_view"] = view
    if args.json:
        print_json(stats, sys.stdout)
        return 0
    if stats["backend"] == "mysql":
        print(f"{db.display_url}: MySQL/MariaDB database {stats['database']}")
        rows: list[tuple[Any, ...]] = [(t["table_name"], t["table_rows"], f"{t['data_size_mb']:.2f}",
                                         f"{t['index_size_mb']:.2f}") for t in stats["tables"]]
        print(format_table(("TABLE", "ROWS (EST.)", "DATA MB", "INDEX MB"), rows))
    else:
        print(f"{stats['path']}: SQLite, {stats['file_size_bytes'] / 2**20:.2f} MiB "
              f"({stats['page_count']} pages of {stats['page_size']} bytes, {stats['freelist_count']} free), "
              f"WAL {stats['wal_size_bytes'] / 2**20:.2f} MiB")
        print(format_table(("TABLE", "ROWS"), [(t["table_name"], t["table_rows"]) for t in stats["tables"]]))
    print()
    slow = stats["slow_queries"]
    if slow["available"]:
        print("slowest statements (average):")
        if not slow["queries"]:
            print("  none recorded yet")
        for query in slow["queries"]:
            text = " ".join(str(query.get("digest_text") or "").split())
            print(f"  {query['avg_ms']:9.3f} ms  x{query.get('count_star')}  {text[:120]}")
    else:
        print(f"slow queries: {slow['message']}")
    print()
    pool = view["pool"]
    print(f"round trip (median of 5 SELECT 1): {view['round_trip_ms']:.3f} ms; pool: {pool['status']}")
    return 0


async def db_backup(args: argparse.Namespace, settings: Settings) -> int:
    """`aifarm db backup FILE`: a consistent copy of the farm database (gzip when FILE ends in .gz)."""
    from app.operations.backup import backup

    async with farm_database(_admin_url(settings), require="reachable") as db:
        result = await backup(db, Path(args.file))
    outcome = BackupOutcome(database=db.display_url, path=str(result["path"]), bytes=int(result["bytes"]),
                            compressed=bool(result["compressed"]))
    report(args, outcome, f"backed up {db.display_url} to {result['path']} ({result['bytes']} bytes"
                          f"{', gzip' if result['compressed'] else ''})")
    return 0


async def db_restore(args: argparse.Namespace, settings: Settings) -> int:
    """`aifarm db restore FILE [--force]`: replace the farm database's content with a backup."""
    from app.operations.backup import restore

    async with farm_database(_admin_url(settings), require="any") as db:
        result = await restore(db, Path(args.file), bool(args.force))
    replaced = f", replacing {result['replaced_rows']} rows" if result["replaced_rows"] else ""
    lines = [f"restored {result['path']} into {db.display_url}{replaced}; schema revision {result['revision']}"]
    if not result["current"]:
        lines.append("the restored schema is older than this version: run `aifarm db upgrade`")
    outcome = RestoreOutcome(database=db.display_url, path=str(result["path"]), replaced_rows=int(result["replaced_rows"]),
                             revision=result["revision"], current=bool(result["current"]))
    report(args, outcome, *lines)
    return 0


async def db_create_agent_user(args: argparse.Namespace, settings: Settings) -> int:
    """`aifarm db create-agent-user NAME [--host HOST] [--password PW] [--apply]`: the agents' least-privilege account."""
    from app.db.urls import parse_database_url
    from app.operations.accounts import agent_url, agent_user_sql, apply, generate_password

    admin_text = _admin_url(settings)
    admin = parse_database_url(admin_text)
    if not admin.drivername.startswith("mysql"):
        raise ValidationError("create-agent-user needs a MySQL/MariaDB farm database: set database_url "
                              "(or admin_database_url) to mysql://…", {"database_url": "not MySQL/MariaDB"})
    assert admin.database
    password = args.password or generate_password()
    host = args.host or "%"
    statements = agent_user_sql(args.name, host, admin.database, password)
    url = agent_url(admin, args.name, password)
    if not args.apply:
        # The operator's own output: the password is shown once, here, and never logged.
        for statement in statements:
            print(statement + ";")
        print(f"-- then give the agents this URL (keep it secret): {url}")
        return 0
    async with farm_database(admin_text, require="any") as db:
        await apply(db, statements)
    print(f"account '{args.name}'@'{host}' may now SELECT, INSERT, UPDATE and DELETE in {admin.database} "
          "(an existing account's password was reset)")
    print(f"agents use: {url}")
    return 0
