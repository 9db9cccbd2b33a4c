# PYTHON_ARGCOMPLETE_OK
"""The `aifarm` command line: parse arguments, load settings, configure logging, run one command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, NoReturn

from app import __version__
from app.config import SPEC_BY_NAME, Settings, load_settings
from app.errors import AifarmError
from app.ids import MAX_ID, parse_int
from app.runtime_files import secure_data_dir
from app.statuses import TASK_STATUSES

log = logging.getLogger("app")

EX_USAGE = 64  # sysexits.h; 2 means a bad setting or input

Handler = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one `aifarm: error:` line."""

    def error(self, message: str) -> NoReturn:
        """Print one line naming the problem and exit 64 (EX_USAGE)."""
        command = self.prog.removeprefix("aifarm").strip()
        where = f" (see `aifarm {command} --help`)" if command else " (see `aifarm --help`)"
        self.exit(EX_USAGE, f"aifarm: error: {message}{where}\n")


def _bounded_int(what: str, low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = parse_int(text.strip(), low, high)
        if value is None:
            raise argparse.ArgumentTypeError(f"{what} must be a whole number from {low} to {high}, not {text[:40]!r}")
        return value

    parse.__name__ = what
    return parse


_LIMIT = _bounded_int("the limit", 1, 10_000)
_OFFSET = _bounded_int("the offset", 0, 10**9)
_TASK_ID = _bounded_int("a task id", 1, MAX_ID)
_PORT = _bounded_int("a port", 0, 65535)


def _help(name: str) -> str:
    return SPEC_BY_NAME[name].help


def _common(parser: argparse.ArgumentParser, *, json_output: bool = False, outcome: bool = False) -> None:
    parser.add_argument("--database-url", metavar="URL", help=_help("database_url"))
    parser.add_argument("--data-dir", metavar="DIR", help=_help("data_dir"))
    parser.add_argument("--config", metavar="FILE", help="Settings file (default: the user's config dir).")
    parser.add_argument("--log-level", metavar="LEVEL", help=_help("log_level"))
    parser.add_argument("--admin-database-url", metavar="URL", help=_help("admin_database_url"))
    if json_output:
        parser.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
    elif outcome:
        parser.add_argument("--json", action="store_true", help="Print the outcome as one JSON object.")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = _Parser(
        prog="aifarm",
        description="AI Farm: donate this machine's GPU/CPU time to a LAN training farm.",
    )
    parser.add_argument("--version", action="version", version=f"aifarm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser("run", help="Run the agent (dashboard, peer API, discovery, training).")
    _common(run)
    run.add_argument("--headless", action="store_true", help="No tray icon, even when a display is available.")
    run.add_argument("--port", type=_PORT, metavar="N", dest="dashboard_port", help=_help("dashboard_port"))
    run.add_argument("--peer-port", type=_PORT, metavar="N", dest="peer_port", help=_help("peer_port"))
    run.add_argument("--host", metavar="ADDR", dest="dashboard_host", help=_help("dashboard_host"))
    run.add_argument("--expose", action="store_const", const=True, help=_help("expose"))
    run.add_argument("--farm-name", metavar="NAME", help=_help("farm_name"))
    run.add_argument("--heartbeat-interval", metavar="DURATION", help=_help("heartbeat_interval"))
    run.set_defaults(handler="run_agent")

    db = sub.add_parser("db", help="Create, upgrade and check the farm database.")
    db_sub = db.add_subparsers(dest="db_command", metavar="DB_COMMAND", required=True)
    upgrade = db_sub.add_parser("upgrade", help="Create the database schema or upgrade it to this version.")
    _common(upgrade, outcome=True)
    upgrade.set_defaults(handler="db_upgrade")
    check = db_sub.add_parser("check", help="Compare the live schema with the seed schema and print every difference.")
    _common(check, json_output=True)
    check.set_defaults(handler="db_check")

    stats_db = db_sub.add_parser("stats", help="Table sizes, slow queries and this machine's view of the database.")
    _common(stats_db, json_output=True)
    stats_db.set_defaults(handler="db_stats")
    backup = db_sub.add_parser("backup", help="Write a consistent backup of the farm database (FILE.gz: gzip).")
    _common(backup, outcome=True)
    backup.add_argument("file", metavar="FILE")
    backup.set_defaults(handler="db_backup")
    restore = db_sub.add_parser("restore", help="Replace the farm database's content with a backup.")
    _common(restore, outcome=True)
    restore.add_argument("file", metavar="FILE")
    restore.add_argument("--force", action="store_true", help="Replace a database that already has rows.")
    restore.set_defaults(handler="db_restore")
    agent_user = db_sub.add_parser("create-agent-user", help="The agents' least-privilege MySQL/MariaDB account (rows only).")
    _common(agent_user)
    agent_user.add_argument("name", metavar="NAME")
    agent_user.add_argument("--host", default="%", help="Host part of the account (default: %%, any host).")
    agent_user.add_argument("--password", metavar="PW", help="Its password (default: a generated one, shown once).")
    agent_user.add_argument("--apply", action="store_true",
                            help="Run it with admin_database_url (or database_url) instead of printing it.")
    agent_user.set_defaults(handler="db_create_agent_user")

    maintenance = sub.add_parser("maintenance", help="Run the farm database's maintenance sweeps.")
    maintenance_sub = maintenance.add_subparsers(dest="maintenance_command", metavar="MAINTENANCE_COMMAND", required=True)
    maint_run = maintenance_sub.add_parser(
        "run", help="Run every sweep now: old tasks, inactive clients, orphaned assignments, old logs and metrics.")
    _common(maint_run, json_output=True)
    maint_run.add_argument("--dry-run", action="store_true", help="Only count what would change; change nothing.")
    maint_run.set_defaults(handler="maintenance_run")

    tasks = sub.add_parser("tasks", help="List tasks.")
    _common(tasks, json_output=True)
    tasks.add_argument("--status", choices=TASK_STATUSES)
    tasks.add_argument("--type", metavar="TYPE")
    tasks.add_argument("--sort", choices=("priority", "newest", "oldest"), default="priority")
    tasks.add_argument("--limit", type=_LIMIT, default=50, metavar="N", help="at most N tasks (1 to 10000)")
    tasks.add_argument("--offset", type=_OFFSET, default=0, metavar="N", help="skip the first N tasks")
    tasks.set_defaults(handler="list_tasks")

    clients = sub.add_parser("clients", help="List the farm's clients.")
    _common(clients, json_output=True)
    clients.add_argument("--status", choices=("active", "inactive"))
    clients.set_defaults(handler="list_clients")

    stats = sub.add_parser("stats", help="Task completion statistics and farm totals.")
    _common(stats, json_output=True)
    stats.set_defaults(handler="show_stats")

    submit = sub.add_parser("submit", help="Submit a training task from a JSON file (or - for standard input).")
    _common(submit, json_output=True)
    submit.add_argument("file", metavar="FILE", help="the task as JSON: type, requirements, config, priority")
    submit.add_argument("--wait", action="store_true", help="Follow the task with a progress bar until it ends.")
    submit.add_argument("--quiet", action="store_true", help="With --wait: no progress display.")
    submit.set_defaults(handler="submit_task")

    show = sub.add_parser("task", help="Show one task: status, progress, ranks, why it waits.")
    _common(show, json_output=True)
    show.add_argument("task_id", type=_TASK_ID, metavar="ID")
    show.set_defaults(handler="show_task")

    cancel = sub.add_parser("cancel", help="Cancel a pending or running task.")
    _common(cancel, outcome=True)
    cancel.add_argument("task_id", type=_TASK_ID, metavar="ID")
    cancel.set_defaults(handler="cancel_task")

    retry = sub.add_parser("retry", help="Put a failed or errored task back in the queue.")
    _common(retry, outcome=True)
    retry.add_argument("task_id", type=_TASK_ID, metavar="ID")
    retry.set_defaults(handler="retry_task")

    pause = sub.add_parser("pause", help="Stop claiming new tasks on this machine (the running agent of the data dir).")
    _common(pause, outcome=True)
    pause.add_argument("--for", dest="duration", metavar="DURATION", help="resume by itself after this long (e.g. 1h)")
    pause.add_argument("--finish-current", action="store_true",
                       help="let the current task finish, then pause (otherwise it is checkpointed and released)")
    pause.set_defaults(handler="pause_agent")

    resume = sub.add_parser("resume", help="Resume donating on this machine.")
    _common(resume, outcome=True)
    resume.set_defaults(handler="resume_agent")

    models = sub.add_parser("models", help="List model versions, or pull one (aifarm models pull NAME[:VERSION]).")
    models_sub = models.add_subparsers(dest="models_command", metavar="MODELS_COMMAND")
    _common(models, json_output=True)
    models.add_argument("--name", metavar="NAME", help="only versions of this model name")
    models.set_defaults(handler="list_models")
    pull = models_sub.add_parser("pull", help="Download a model version and verify its sha256.")
    _common(pull)
    pull.add_argument("ref", metavar="NAME[:VERSION]")
    pull.add_argument("-o", "--output", metavar="FILE", help="where to save it (default: NAME-vVERSION.pt)")
    pull.add_argument("--quiet", action="store_true", help="no progress bar")
    pull.add_argument("--farm-name", metavar="NAME", help=_help("farm_name"))
    pull.set_defaults(handler="pull_model")

    prefs = sub.add_parser("prefs", help="Show or change the donation preferences (applied without a restart).")
    _common(prefs, json_output=True)
    prefs_sub = prefs.add_subparsers(dest="prefs_command", metavar="PREFS_COMMAND")
    prefs_set = prefs_sub.add_parser("set", help="Set a preference, e.g. `aifarm prefs set cpu_threads 2`.")
    prefs_set.add_argument("name", metavar="NAME")
    prefs_set.add_argument("value", metavar="VALUE")
    _common(prefs_set, outcome=True)
    prefs_unset = prefs_sub.add_parser("unset", help="Back to the default.")
    prefs_unset.add_argument("name", metavar="NAME")
    _common(prefs_unset, outcome=True)
    prefs.set_defaults(handler="prefs")

    dashboard = sub.add_parser("dashboard", help="Print a one-time sign-in link to the running agent's dashboard.")
    _common(dashboard)
    dashboard.add_argument("--open", action="store_true", help="Also open it in the default browser.")
    dashboard.set_defaults(handler="open_dashboard")

    peers = sub.add_parser("peers", help="List the peers the running agent of this data dir sees.")
    _common(peers, json_output=True)
    peers.set_defaults(handler="show_peers")

    join = sub.add_parser("join", help="Join a farm: store its database URL (mode 0600) for this data dir.")
    _common(join, outcome=True)
    join.add_argument("url", metavar="DATABASE_URL", help="mysql://USER:PASSWORD@HOST[:PORT]/DATABASE")
    join.add_argument("--farm-name", metavar="NAME", help=_help("farm_name"))
    join.set_defaults(handler="join_farm")

    leave = sub.add_parser("leave", help="Leave the farm: go back to the embedded database.")
    _common(leave, outcome=True)
    leave.set_defaults(handler="leave_farm")

    farm = sub.add_parser("farm", help="Farm-wide settings kept in the farm database (organiser).")
    farm_sub = farm.add_subparsers(dest="farm_command", metavar="FARM_COMMAND", required=True)
    hosts = farm_sub.add_parser("dataset-hosts", help="The hosts tasks may download datasets from (add, remove, list).")
    hosts_sub = hosts.add_subparsers(dest="hosts_command", metavar="ACTION", required=True)
    for action, text in (("add", "Allow downloads from HOST (a host name or IP, optionally HOST:PORT)."),
                         ("remove", "Stop allowing HOST."), ("list", "List the allowed hosts.")):
        parser_ = hosts_sub.add_parser(action, help=text)
        _common(parser_, json_output=action == "list", outcome=action != "list")
        parser_.add_argument("--farm-name", metavar="NAME", help=_help("farm_name"))
        if action != "list":
            parser_.add_argument("host", metavar="HOST")
        parser_.set_defaults(handler="farm_dataset_hosts")

    config = sub.add_parser("config", help="Show the effective settings and where each came from.")
    _common(config, json_output=True)
    config.set_defaults(handler="show_config")

    status = sub.add_parser("status", help="Is this data dir's agent running: pid, dashboard, donation, task, database.")
    _common(status, json_output=True)
    status.set_defaults(handler="agent_status")

    stop = sub.add_parser("stop", help="Stop this data dir's running agent cleanly (as Ctrl-C) and wait for it.")
    _common(stop, outcome=True)
    stop.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS", help="How long to wait (default 60).")
    stop.set_defaults(handler="stop_agent")

    logs = sub.add_parser("logs", help="Show the agent's log file (DATA_DIR/logs/agent.log); -f follows it.")
    _common(logs)
    logs.add_argument("-f", "--follow", action="store_true", help="Keep printing new lines until Ctrl-C.")
    logs.add_argument("-n", "--lines", type=int, default=50, metavar="N", help="How many of the last lines (default 50).")
    logs.set_defaults(handler="show_logs")

    doctor = sub.add_parser("doctor", help="Check this machine's set-up (database, ports, network, GPU, tray, sandbox, disk).")
    _common(doctor, json_output=True)
    doctor.set_defaults(handler="doctor")

    completion = sub.add_parser("completion", help="Print the shell code that completes `aifarm` commands (bash, zsh, fish).")
    completion.add_argument("shell", choices=COMPLETION_SHELLS, help="e.g. add `eval \"$(aifarm completion bash)\"` to ~/.bashrc")
    completion.set_defaults(handler="completion")
    return parser


COMPLETION_SHELLS = ("bash", "zsh", "fish")


def completion_code(shell: str) -> str:
    """The shell code that registers `aifarm` with argcomplete (what register-python-argcomplete prints)."""
    from argcomplete.shell_integration import shellcode

    return shellcode(["aifarm"], shell=shell)


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
    from app import commands  # imported here: SQLAlchemy and alembic are not needed for --help/--version

    handler: Handler = getattr(commands, args.handler)
    return asyncio.run(handler(args, settings))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:
        import argcomplete  # only when the shell asks for completions: it exits after printing them

        argcomplete.autocomplete(parser)
    args = parser.parse_args(argv)
    if args.handler == "completion":
        sys.stdout.write(completion_code(args.shell))
        return 0
    try:
        settings = settings_from_args(args)
        configure_logging(settings.log_level)
        secure_data_dir(settings.data_dir)  # before anything writes it; workers inherit the umask
        if args.handler == "run_agent":
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
