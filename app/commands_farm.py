"""`aifarm farm ...`: farm-wide settings the organiser keeps in the farm database."""

from __future__ import annotations

import argparse

from app.cli_db import farm_database
from app.commands_outcomes import DatasetHostOutcome, report
from app.config import Settings
from app.errors import ConfigError
from app.textui import print_json


async def farm_dataset_hosts(args: argparse.Namespace, settings: Settings) -> int:
    """`aifarm farm dataset-hosts add|remove HOST` and `list`: the hosts tasks may download datasets from."""
    from app.db.queries import dataset_hosts as host_queries
    from app.training.sources import parse_host_entry

    host = None
    if args.hosts_command != "list":
        try:
            host = parse_host_entry(args.host)
        except ValueError as exc:
            raise ConfigError(f"dataset host {args.host!r} is invalid: {exc}") from None
    async with farm_database(settings.effective_database_url) as db, db.begin() as conn:
        if args.hosts_command == "list":
            hosts = await host_queries.list_hosts(conn, settings.farm_name)
        elif args.hosts_command == "add":
            assert host is not None
            changed = await host_queries.add_host(conn, settings.farm_name, host)
        else:
            assert host is not None
            changed = await host_queries.remove_host(conn, settings.farm_name, host)
    if args.hosts_command == "list":
        if args.json:
            print_json({"farm_name": settings.farm_name, "dataset_hosts": hosts})
        else:
            for item in hosts:
                print(item)
            if not hosts:
                print(f"farm {settings.farm_name!r}: no dataset hosts (tasks may only read files in dataset_dirs)")
        return 0
    outcome = DatasetHostOutcome(farm_name=settings.farm_name, host=str(host), action=args.hosts_command, changed=changed)
    if args.hosts_command == "add":
        report(args, outcome, f"{host} added to farm {settings.farm_name!r}'s dataset hosts" if changed
               else f"{host} is already one of farm {settings.farm_name!r}'s dataset hosts")
        return 0
    if not changed:
        raise ConfigError(f"{host} is not one of farm {settings.farm_name!r}'s dataset hosts")
    report(args, outcome, f"{host} removed from farm {settings.farm_name!r}'s dataset hosts")
    return 0
