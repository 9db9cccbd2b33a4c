"""What the outcome-reporting subcommands print: one line of text, or with --json one object on stdout."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any, TypedDict

from app.textui import print_json


class TaskOutcome(TypedDict):
    """`cancel` and `retry`: the task and the status it has now."""

    task_id: int
    action: str
    status: str


class DonationOutcome(TypedDict):
    """`pause` and `resume`: the running agent's donation state."""

    paused: bool
    until: str | None
    finish_current: bool
    summary: str


class FarmOutcome(TypedDict):
    """`join` and `leave`: the farm this data dir uses now and the file that says so."""

    action: str
    farm_name: str | None
    database: str
    config_file: str
    restart_needed: bool


class SchemaOutcome(TypedDict):
    """`db upgrade`: the revisions before and after."""

    database: str
    from_revision: str | None
    to_revision: str
    upgraded: bool


class BackupOutcome(TypedDict):
    """`db backup`: the file written."""

    database: str
    path: str
    bytes: int
    compressed: bool


class RestoreOutcome(TypedDict):
    """`db restore`: what was replaced and the schema revision restored."""

    database: str
    path: str
    replaced_rows: int
    revision: str | None
    current: bool


class DatasetHostOutcome(TypedDict):
    """`farm dataset-hosts add|remove`: whether the list changed."""

    farm_name: str
    host: str
    action: str
    changed: bool


class StopOutcome(TypedDict):
    """`stop`: the agent's pid (None when none was running) and whether it stopped."""

    pid: int | None
    was_running: bool
    stopped: bool


class PrefOutcome(TypedDict):
    """`prefs set|unset`: the preference, its new value and whether the running agent applied it."""

    name: str
    action: str
    value: str | None
    applied_now: bool


def report(args: argparse.Namespace, outcome: Mapping[str, Any], *lines: str) -> None:
    """Print the outcome as JSON with --json, else its lines of text."""
    if getattr(args, "json", False):
        print_json(dict(outcome))
    else:
        for line in lines:
            print(line)


def donation_outcome(state: Mapping[str, Any]) -> DonationOutcome:
    """The donation state from the agent's answer."""
    return DonationOutcome(paused=bool(state.get("paused")), until=state.get("until"),
                           finish_current=bool(state.get("finish_current")), summary=str(state.get("summary", "")))
