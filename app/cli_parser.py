"""The `aifarm` argument parser: one function per group of subcommands, each naming its handler function."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, NoReturn

from app import __version__, commands, commands_bundles, commands_datasets, commands_farm, commands_ops
from app.config import SPEC_BY_NAME, Settings
from app.ids import MAX_ID, parse_int
from app.statuses import TASK_STATUSES

EX_USAGE = 64  # sysexits.h; 2 means a bad setting or input

Handler = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one `aifarm: error:` line."""

    def error(self, message: str) -> NoReturn:
        """Print one line naming the problem and exit 64 (EX_USAGE)."""
        command = self.prog.removeprefix("aifarm").strip()
        where = f" (see `aifarm {command} --help`)" if command else " (see `aifarm --help`)"
        self.exit(EX_USAGE, f"aifarm: error: {message}{where}\n")


if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[_Parser]


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


def _command(sub: SubParsers, name: str, text: str, handler: Handler, *, json_output: bool = False,
             outcome: bool = False) -> argparse.ArgumentParser:
    """A subcommand with the common options, run by `handler`."""
    parser: argparse.ArgumentParser = sub.add_parser(name, help=text)
    _common(parser, json_output=json_output, outcome=outcome)
    parser.set_defaults(handler=handler)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = _Parser(
        prog="aifarm",
        description="AI Farm: donate this machine's GPU/CPU time to a LAN training farm.",
    )
    parser.add_argument("--version", action="version", version=f"aifarm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # in the order `aifarm --help` lists them
    _add_run(sub)
    _add_database(sub)
    _add_tasks(sub)
    _add_donation(sub)
    _add_models(sub)
    _add_datasets(sub)
    _add_running_agent(sub)
    _add_farm(sub)
    _add_bundles(sub)
    _add_this_machine(sub)
    return parser


def _add_run(sub: SubParsers) -> None:
    run = _command(sub, "run", "Run the agent (dashboard, peer API, discovery, training).", commands.run_agent)
    run.add_argument("--headless", action="store_true", help="No tray icon, even when a display is available.")
    run.add_argument("--port", type=_PORT, metavar="N", dest="dashboard_port", help=_help("dashboard_port"))
    run.add_argument("--peer-port", type=_PORT, metavar="N", dest="peer_port", help=_help("peer_port"))
    run.add_argument("--host", metavar="ADDR", dest="dashboard_host", help=_help("dashboard_host"))
    run.add_argument("--expose", action="store_const", const=True, help=_help("expose"))
    run.add_argument("--farm-name", metavar="NAME", help=_help("farm_name"))
    run.add_argument("--heartbeat-interval", metavar="DURATION", help=_help("heartbeat_interval"))


def _add_database(sub: SubParsers) -> None:
    db = sub.add_parser("db", help="Create, upgrade and check the farm database.")
    db_sub = db.add_subparsers(dest="db_command", metavar="DB_COMMAND", required=True)
    _command(db_sub, "upgrade", "Create the database schema or upgrade it to this version.", commands.db_upgrade,
             outcome=True)
    _command(db_sub, "check", "Compare the live schema with the seed schema and print every difference.",
             commands.db_check, json_output=True)
    _command(db_sub, "stats", "Table sizes, slow queries and this machine's view of the database.",
             commands_ops.db_stats, json_output=True)
    backup = _command(db_sub, "backup", "Write a consistent backup of the farm database (FILE.gz: gzip).",
                      commands_ops.db_backup, outcome=True)
    backup.add_argument("file", metavar="FILE")
    restore = _command(db_sub, "restore", "Replace the farm database's content with a backup.", commands_ops.db_restore,
                       outcome=True)
    restore.add_argument("file", metavar="FILE")
    restore.add_argument("--force", action="store_true", help="Replace a database that already has rows.")
    agent_user = _command(db_sub, "create-agent-user", "The agents' least-privilege MySQL/MariaDB account (rows only).",
                          commands_ops.db_create_agent_user)
    agent_user.add_argument("name", metavar="NAME")
    agent_user.add_argument("--host", default="%", help="Host part of the account (default: %%, any host).")
    agent_user.add_argument("--password", metavar="PW", help="Its password (default: a generated one, shown once).")
    agent_user.add_argument("--apply", action="store_true",
                            help="Run it with admin_database_url (or database_url) instead of printing it.")

    maintenance = sub.add_parser("maintenance", help="Run the farm database's maintenance sweeps.")
    maintenance_sub = maintenance.add_subparsers(dest="maintenance_command", metavar="MAINTENANCE_COMMAND", required=True)
    maint_run = _command(maintenance_sub, "run",
                         "Run every sweep now: old tasks, inactive clients, orphaned assignments, old logs and metrics.",
                         commands_ops.maintenance_run, json_output=True)
    maint_run.add_argument("--dry-run", action="store_true", help="Only count what would change; change nothing.")


def _add_tasks(sub: SubParsers) -> None:
    tasks = _command(sub, "tasks", "List tasks.", commands.list_tasks, json_output=True)
    tasks.add_argument("--status", choices=TASK_STATUSES)
    tasks.add_argument("--type", metavar="TYPE")
    tasks.add_argument("--sort", choices=("priority", "newest", "oldest"), default="priority")
    tasks.add_argument("--limit", type=_LIMIT, default=50, metavar="N", help="at most N tasks (1 to 10000)")
    tasks.add_argument("--offset", type=_OFFSET, default=0, metavar="N", help="skip the first N tasks")

    clients = _command(sub, "clients", "List the farm's clients.", commands.list_clients, json_output=True)
    clients.add_argument("--status", choices=("active", "inactive"))

    _command(sub, "stats", "Task completion statistics and farm totals.", commands.show_stats, json_output=True)

    submit = _command(sub, "submit", "Submit a training task from a JSON file (or - for standard input).",
                      commands.submit_task, json_output=True)
    submit.add_argument("file", metavar="FILE", help="the task as JSON: type, requirements, config, priority")
    submit.add_argument("--wait", action="store_true", help="Follow the task with a progress bar until it ends.")
    submit.add_argument("--quiet", action="store_true", help="With --wait: no progress display.")

    show = _command(sub, "task", "Show one task: status, progress, ranks, why it waits.", commands.show_task,
                    json_output=True)
    show.add_argument("task_id", type=_TASK_ID, metavar="ID")

    cancel = _command(sub, "cancel", "Cancel a pending or running task.", commands.cancel_task, outcome=True)
    cancel.add_argument("task_id", type=_TASK_ID, metavar="ID")

    retry = _command(sub, "retry", "Put a failed or errored task back in the queue.", commands.retry_task, outcome=True)
    retry.add_argument("task_id", type=_TASK_ID, metavar="ID")


def _add_donation(sub: SubParsers) -> None:
    pause = _command(sub, "pause", "Stop claiming new tasks on this machine (the running agent of the data dir).",
                     commands.pause_agent, outcome=True)
    pause.add_argument("--for", dest="duration", metavar="DURATION", help="resume by itself after this long (e.g. 1h)")
    pause.add_argument("--finish-current", action="store_true",
                       help="let the current task finish, then pause (otherwise it is checkpointed and released)")
    _command(sub, "resume", "Resume donating on this machine.", commands.resume_agent, outcome=True)


def _add_models(sub: SubParsers) -> None:
    models = sub.add_parser("models", help="List model versions, or pull one (aifarm models pull NAME[:VERSION]).")
    models_sub = models.add_subparsers(dest="models_command", metavar="MODELS_COMMAND")
    _common(models, json_output=True)
    models.add_argument("--name", metavar="NAME", help="only versions of this model name")
    models.set_defaults(handler=commands.list_models)
    pull = _command(models_sub, "pull", "Download a model version and verify its sha256.", commands.pull_model)
    pull.add_argument("ref", metavar="NAME[:VERSION]")
    pull.add_argument("-o", "--output", metavar="DIR", help="folder for NAME-vVERSION.safetensors and its .json "
                                                            "(default: here), or the weights file's own name")
    pull.add_argument("--quiet", action="store_true", help="no progress bar")
    pull.add_argument("--farm-name", metavar="NAME", help=_help("farm_name"))
    tried = _command(models_sub, "try", "Run a model here: a prompt in, text out; or an image in, top classes out.",
                     commands.try_model)
    tried.add_argument("ref", metavar="NAME[:VERSION]")
    tried.add_argument("--prompt", default="", help="text the language model continues")
    tried.add_argument("--max-tokens", type=int, default=200, metavar="N", help="tokens to generate (default 200)")
    tried.add_argument("--temperature", type=float, default=0.8, metavar="T", help="sampling temperature; 0: greedy")
    tried.add_argument("--image", metavar="FILE", help="an image for an image classifier")
    tried.add_argument("--farm-name", metavar="NAME", help=_help("farm_name"))


def _add_datasets(sub: SubParsers) -> None:
    datasets = sub.add_parser("datasets", help="Publish datasets to the farm as verified shards; list, show, remove.")
    datasets_sub = datasets.add_subparsers(dest="datasets_command", metavar="DATASETS_COMMAND", required=True)
    publish = _command(datasets_sub, "publish", "Shard a file or folder in this data dir and register it in the farm.",
                       commands_datasets.publish_dataset, outcome=True)
    publish.add_argument("path", metavar="PATH", help="text file or folder (tokens), .npz or folder of images.npy and "
                                                      "labels.npy (images), or .csv")
    publish.add_argument("--name", required=True, metavar="NAME", help="the dataset's name (a new version each time)")
    publish.add_argument("--tokenizer", default="byte", metavar="byte|FILE.json",
                         help="how text becomes token ids (default: byte)")
    publish.add_argument("--shard-size", metavar="SIZE", help="bytes per shard, e.g. 64MB (default), 512k, 1G")
    listing = _command(datasets_sub, "list", "List published datasets.", commands_datasets.list_datasets,
                       json_output=True)
    listing.add_argument("--name", metavar="NAME", help="only versions of this name")
    show = _command(datasets_sub, "show", "Show a dataset's manifest and who holds its shards.",
                    commands_datasets.show_dataset, json_output=True)
    show.add_argument("ref", metavar="NAME[:VERSION]")
    remove = _command(datasets_sub, "remove", "Unregister a dataset version (all versions without one).",
                      commands_datasets.remove_dataset, outcome=True)
    remove.add_argument("ref", metavar="NAME[:VERSION]")


def _add_running_agent(sub: SubParsers) -> None:
    prefs = _command(sub, "prefs", "Show or change the donation preferences (applied without a restart).",
                     commands.prefs, json_output=True)
    prefs_sub = prefs.add_subparsers(dest="prefs_command", metavar="PREFS_COMMAND")
    prefs_set = prefs_sub.add_parser("set", help="Set a preference, e.g. `aifarm prefs set cpu_threads 2`.")
    prefs_set.add_argument("name", metavar="NAME")
    prefs_set.add_argument("value", metavar="VALUE")
    _common(prefs_set, outcome=True)
    prefs_unset = prefs_sub.add_parser("unset", help="Back to the default.")
    prefs_unset.add_argument("name", metavar="NAME")
    _common(prefs_unset, outcome=True)

    dashboard = _command(sub, "dashboard", "Print a one-time sign-in link to the running agent's dashboard.",
                         commands.open_dashboard)
    dashboard.add_argument("--open", action="store_true", help="Also open it in the default browser.")

    _command(sub, "peers", "List the peers the running agent of this data dir sees.", commands.show_peers,
             json_output=True)


def _add_farm(sub: SubParsers) -> None:
    join = _command(sub, "join", "Join a farm: store its database URL (mode 0600) for this data dir.", commands.join_farm,
                    outcome=True)
    join.add_argument("url", metavar="DATABASE_URL", help="mysql://USER:PASSWORD@HOST[:PORT]/DATABASE")
    join.add_argument("--farm-name", metavar="NAME", help=_help("farm_name"))

    _command(sub, "leave", "Leave the farm: go back to the embedded database.", commands.leave_farm, outcome=True)

    farm = sub.add_parser("farm", help="Farm-wide settings kept in the farm database (organiser).")
    farm_sub = farm.add_subparsers(dest="farm_command", metavar="FARM_COMMAND", required=True)
    hosts = farm_sub.add_parser("dataset-hosts", help="The hosts tasks may download datasets from (add, remove, list).")
    hosts_sub = hosts.add_subparsers(dest="hosts_command", metavar="ACTION", required=True)
    for action, text in (("add", "Allow downloads from HOST (a host name or IP, optionally HOST:PORT)."),
                         ("remove", "Stop allowing HOST."), ("list", "List the allowed hosts.")):
        host_action = _command(hosts_sub, action, text, commands_farm.farm_dataset_hosts, json_output=action == "list",
                               outcome=action != "list")
        host_action.add_argument("--farm-name", metavar="NAME", help=_help("farm_name"))
        if action != "list":
            host_action.add_argument("host", metavar="HOST")


def _add_bundles(sub: SubParsers) -> None:
    bundles = sub.add_parser("bundles", help="Signed recipe bundles: keys, publish, trust, revoke.")
    bsub = bundles.add_subparsers(dest="bundles_command", metavar="BUNDLES_COMMAND", required=True)
    keygen = _command(bsub, "keygen", "Make an Ed25519 signing key (organiser; mode 0600).",
                      commands_bundles.bundles_keygen, outcome=True)
    keygen.add_argument("keyfile", metavar="KEYFILE")
    publish = _command(bsub, "publish", "Sign a wheel's manifest and register it in the farm database.",
                       commands_bundles.bundles_publish, outcome=True)
    publish.add_argument("wheel", metavar="WHEEL")
    publish.add_argument("--key", required=True, metavar="KEYFILE", help="the signing key (bundles keygen)")
    publish.add_argument("--publisher", metavar="NAME", help="who publishes it, as volunteers will see it")
    for name, text, handler in (("trust", "Install and run bundles signed by this key on this machine.",
                                 commands_bundles.bundles_trust),
                                ("untrust", "Stop trusting this key.", commands_bundles.bundles_untrust)):
        _command(bsub, name, text, handler).add_argument("fingerprint", metavar="FINGERPRINT")
    _command(bsub, "list", "List published bundles and whether their keys are trusted here.",
             commands_bundles.bundles_list, json_output=True)
    show = _command(bsub, "show", "Show a bundle's recipes, requirements, key and state.",
                    commands_bundles.bundles_show, json_output=True)
    show.add_argument("ref", metavar="NAME[==VERSION]")
    revoke = _command(bsub, "revoke", "Revoke a bundle version: agents stop its tasks and delete it.",
                      commands_bundles.bundles_revoke)
    revoke.add_argument("ref", metavar="NAME==VERSION")
    revoke.add_argument("--key", required=True, metavar="KEYFILE", help="the key that signed it")


def _add_this_machine(sub: SubParsers) -> None:
    _command(sub, "config", "Show the effective settings and where each came from.", commands.show_config,
             json_output=True)
    _command(sub, "status", "Is this data dir's agent running: pid, dashboard, donation, task, database.",
             commands.agent_status, json_output=True)

    stop = _command(sub, "stop", "Stop this data dir's running agent cleanly (as Ctrl-C) and wait for it.",
                    commands.stop_agent, outcome=True)
    stop.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS", help="How long to wait (default 60).")

    logs = _command(sub, "logs", "Show the agent's log file (DATA_DIR/logs/agent.log); -f follows it.", commands.show_logs)
    logs.add_argument("-f", "--follow", action="store_true", help="Keep printing new lines until Ctrl-C.")
    logs.add_argument("-n", "--lines", type=int, default=50, metavar="N", help="How many of the last lines (default 50).")

    _command(sub, "doctor", "Check this machine's set-up (database, ports, network, GPU, tray, sandbox, disk).",
             commands.doctor, json_output=True)

    completion = sub.add_parser("completion", help="Print the shell code that completes `aifarm` commands (bash, zsh, fish).")
    completion.add_argument("shell", choices=commands.COMPLETION_SHELLS,
                            help="e.g. add `eval \"$(aifarm completion bash)\"` to ~/.bashrc")
    completion.set_defaults(handler=commands.completion)

