# PYTHON_ARGCOMPLETE_OK
"""The `aifarm` command line: parse arguments, load settings, configure logging, run one command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from app import commands
from app.cli_parser import Handler, build_parser
from app.config import Settings, load_settings
from app.errors import AifarmError
from app.runtime_files import secure_data_dir

log = logging.getLogger("app")


_SETTING_ARGS = ("database_url", "admin_database_url", "data_dir", "log_level", "dashboard_port", "peer_port", "dashboard_host",
                 "expose", "farm_name", "heartbeat_interval")


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings with the command line's flags as the top layer."""
    from pathlib import Path

    cli = {name: getattr(args, name) for name in _SETTING_ARGS if getattr(args, name, None) is not None}
    config_file = Path(args.config) if getattr(args, "config", None) else None
    return load_settings(cli=cli, config_file=config_file)


def configure_logging(level: str) -> None:
    """Log to stderr once, at the configured level."""
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    for noisy in ("aiohttp.access", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, getattr(logging, level)))


def _run_agent(args: argparse.Namespace, settings: Settings) -> int:
    """`aifarm run`, with the data dir's lock held: its log file, then the tray or headless."""
    from app.agentlog import add_file_handler

    add_file_handler(settings.data_dir, getattr(logging, settings.log_level))
    if not args.headless:
        from app.tray import display_available, run_with_tray

        if display_available():
            from app.exitguard import EXIT_GRACE_SECONDS, exit_within

            code = 1
            try:
                code = run_with_tray(settings, lambda: settings_from_args(args))
                return code
            finally:
                exit_within(EXIT_GRACE_SECONDS, code)
        log.info("no display found: running without a tray icon")
        args.headless = True
    return _run_command(args, settings)


def _run_command(args: argparse.Namespace, settings: Settings) -> int:
    handler: Handler = args.handler
    return asyncio.run(handler(args, settings))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:
        import argcomplete  # only when the shell asks for completions: it exits after printing them

        argcomplete.autocomplete(parser)
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    if handler is commands.completion:  # it reads no settings: a broken settings file must not stop it
        return asyncio.run(commands.completion(args, None))
    try:
        settings = settings_from_args(args)
        configure_logging(settings.log_level)
        secure_data_dir(settings.data_dir)  # before anything writes it; workers inherit the umask
        if handler is commands.run_agent:
            from app.instance import single_instance

            with single_instance(settings.data_dir):
                return _run_agent(args, settings)
        return _run_command(args, settings)
    except AifarmError as exc:
        print(f"aifarm: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def main_tray() -> int:
    """Entry point of the windowless launcher (`aifarm-tray`): `aifarm run` with the tray icon."""
    return main(["run", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
