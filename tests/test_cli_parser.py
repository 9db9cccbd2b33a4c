"""The parser names each subcommand's handler function, and building it loads no database or training code."""

from __future__ import annotations

import argparse
import inspect
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.cli_parser import build_parser
from tests.test_cli import _base_env

HEAVY = ("sqlalchemy", "alembic", "torch", "aiohttp")


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...], handler: object) -> Iterator[tuple[str, object]]:
    """Every command line a user can run (a parser without a required subcommand), with the handler it gets."""
    handler = parser.get_default("handler") or handler
    subparsers = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    if not subparsers or not subparsers[0].required:
        yield " ".join(path), handler
    for action in subparsers:
        for name, child in action.choices.items():
            yield from _commands(child, (*path, name), handler)


def test_every_command_has_a_handler_coroutine_function() -> None:
    """Each subcommand's `handler` default is the async function that runs it, not a name to look up."""
    found = dict(_commands(build_parser(), ("aifarm",), None))
    assert "aifarm run" in found and "aifarm farm dataset-hosts list" in found and "aifarm prefs set" in found
    assert "aifarm db" not in found  # it needs a subcommand
    for command, handler in found.items():
        assert inspect.iscoroutinefunction(handler), f"{command}: handler {handler!r} is not an async function"
        assert handler.__module__.startswith("app.commands"), f"{command}: {handler!r}"  # type: ignore[attr-defined]


def _imported(tmp_path: Path, args: list[str], env: dict[str, str] | None = None, pass_fd: int | None = None) -> set[str]:
    """The top-level packages `python -X importtime -m app ARGS` imported, after checking it exited 0."""
    proc = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "app", *args],
                            env={**_base_env(tmp_path), **(env or {})}, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, pass_fds=(pass_fd, 8) if pass_fd else (),
                            preexec_fn=(lambda: os.dup2(pass_fd, 8)) if pass_fd else None)
    if pass_fd:
        os.close(pass_fd)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr[-2000:]
    lines = [line for line in stderr.splitlines() if line.startswith("import time:")]
    return {line.rsplit("|", 1)[1].strip().split(".")[0] for line in lines[1:]}  # the first is the header


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["task", "--help"]])
def test_help_and_version_load_no_database_code(tmp_path: Path, args: list[str]) -> None:
    """`aifarm --help` and `--version` stay quick: SQLAlchemy, alembic, torch and aiohttp are not imported."""
    imported = _imported(tmp_path, args)
    assert {"app", "argparse"} <= imported
    assert not imported & set(HEAVY), f"{args} imported {sorted(imported & set(HEAVY))}"


def test_completion_loads_no_database_code(tmp_path: Path) -> None:
    """Shell completion (argcomplete, answering on fd 8) imports none of them either."""
    read_end, write_end = os.pipe()
    line = "aifarm ta"
    env = {"_ARGCOMPLETE": "1", "COMP_LINE": line, "COMP_POINT": str(len(line)), "_ARGCOMPLETE_IFS": "\v",
           "COMP_TYPE": "9"}
    imported = _imported(tmp_path, [], env, pass_fd=write_end)
    with os.fdopen(read_end, "rb") as reader:
        assert sorted(word.strip() for word in reader.read().decode().split("\v")) == ["task", "tasks"]
    assert {"app", "argcomplete"} <= imported
    assert not imported & set(HEAVY), f"completion imported {sorted(imported & set(HEAVY))}"
