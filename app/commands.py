"""The bodies of the `aifarm` subcommands; each returns an exit code."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from app.cli_db import farm_database
from app.commands_outcomes import (
    FarmOutcome,
    PrefOutcome,
    SchemaOutcome,
    StopOutcome,
    TaskOutcome,
    donation_outcome,
    report,
)
from app.config import Settings, settings_as_dict
from app.exitguard import EXIT_GRACE_SECONDS, exit_within
from app.textui import format_table, print_json
from app.timefmt import duration, relative_time

if TYPE_CHECKING:
    from app.db.engine import Database

# Handlers import the database layer inside their bodies: the parser refers to them, and `aifarm --help`,
# `--version` and shell completion must not load SQLAlchemy, alembic or aiohttp.


PAUSE_TIMEOUT_S = 90.0


async def run_agent(args: argparse.Namespace, settings: Settings) -> int:
    """`aifarm run`: the agent, until Ctrl-C or SIGTERM."""
    from app.agent import run_until_stopped
    from app.cli import settings_from_args

    code = 1
    try:
        code = await run_until_stopped(settings, headless=bool(args.headless), reload=lambda: settings_from_args(args))
        return code
    finally:
        exit_within(EXIT_GRACE_SECONDS, code)  # the agent has stopped: nothing may keep the process alive now


async def db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    """`aifarm db upgrade`: create or upgrade the schema (with the admin account when one is configured)."""
    from app.db.migrate import upgrade

    async with farm_database(settings.admin_database_url or settings.effective_database_url, require="any") as db:
        before, after = await upgrade(db)
    outcome = SchemaOutcome(database=db.display_url, from_revision=before, to_revision=after, upgraded=before != after)
    if before == after:
        report(args, outcome, f"{db.display_url}: schema is current (revision {after})")
    else:
        report(args, outcome, f"{db.display_url}: schema upgraded from {before or 'empty'} to revision {after}")
    return 0


async def db_check(args: argparse.Namespace, settings: Settings) -> int:
    """`aifarm db check`: print every difference between the live schema and the seed's; exit 1 if any."""
    from app.db.check import check_schema

    async with farm_database(settings.effective_database_url, require="reachable") as db:
        report = await check_schema(db)
    if args.json:
        print_json({"differences": report.differences, "additions": report.additions})
    else:
        for line in report.differences:
            print(f"difference: {line}")
        for line in report.additions:
            print(f"addition: {line}")
        if not report.differences:
            print(f"{db.display_url}: the schema matches the seed document ({len(report.additions)} documented additions)")
    return 1 if report.differences else 0


async def list_tasks(args: argparse.Namespace, settings: Settings) -> int:
    """`aifarm tasks`: a page of tasks, and why pending ones wait."""
    from app.db.queries import tasks as task_queries
    from app.scheduling.service import why_pending

    async with farm_database(settings.effective_database_url) as db:
        async with db.connect() as conn:
            rows, total = await task_queries.list_tasks(
                conn, status=args.status, type=args.type, sort=args.sort, limit=args.limit, offset=args.offset
            )
        waiting = await why_pending(db, rows)
    for row in rows:
        row["waiting_for"] = waiting.get(row["id"])
    if args.json:
        print_json({"tasks": rows, "total": total, "limit": args.limit, "offset": args.offset})
        return 0
    if not rows:
        print("no tasks" + (" match these filters" if args.status or args.type else " yet: submit one with `aifarm submit FILE.json`"))
        return 0
    table = [
        (
            row["id"],
            (row["config"] or {}).get("name", "-") if isinstance(row["config"], dict) else "-",
            row["type"],
            row["status"],
            row["priority"],
            _progress(row["result"]),
            row["client_id"],
            relative_time(row["created_at"]),
        )
        for row in rows
    ]
    print(format_table(("ID", "NAME", "TYPE", "STATUS", "PRIORITY", "PROGRESS", "CLIENT", "CREATED"), table))
    if total > len(rows):
        print(f"({len(rows)} of {total}; use --offset/--limit for more)")
    for row in rows:
        if row.get("waiting_for"):
            print(f"task {row['id']} waits: {row['waiting_for']}")
    return 0


def _progress(result: Any) -> str:
    if isinstance(result, dict) and isinstance(result.get("progress"), (int, float)):
        return f"{result['progress']:.1f}%"
    return "-"


async def list_clients(args: argparse.Namespace, settings: Settings) -> int:
    """`aifarm clients`: every client of the farm."""
    from app.db.queries import clients as client_queries

    async with farm_database(settings.effective_database_url) as db, db.connect() as conn:
        rows = await client_queries.list_clients(conn, status=args.status)
    if args.json:
        print_json({"clients": rows})
        return 0
    if not rows:
        print("no clients yet: start an agent with `aifarm run`")
        return 0
    table = [
        (
            row["id"],
            row["hostname"],
            row["status"],
            _cores(row["cpu_info"]),
            _ram(row["ram_info"]),
            len(row["gpu_info"] or []),
            row["version"],
            relative_time(row["last_seen"]),
        )
        for row in rows
    ]
    print(format_table(("ID", "HOST", "STATUS", "CORES", "RAM", "GPUS", "VERSION", "LAST SEEN"), table))
    return 0


def _cores(cpu: Any) -> Any:
    return cpu.get("logical_cores") if isinstance(cpu, dict) else None


def _ram(ram: Any) -> str | None:
    if isinstance(ram, dict) and isinstance(ram.get("total_mb"), (int, float)):
        return f"{ram['total_mb'] / 1024:.1f} GiB"
    return None


async def show_stats(args: argparse.Namespace, settings: Settings) -> int:
    """`aifarm stats`: completion statistics by type, tasks by status, clients by status."""
    from app.db.queries import clients as client_queries
    from app.db.queries import tasks as task_queries

    async with farm_database(settings.effective_database_url) as db, db.connect() as conn:
        by_type = await task_queries.completion_statistics(conn)
        tasks_by_status = await task_queries.count_by_status(conn)
        clients_by_status = await client_queries.count_by_status(conn)
    if args.json:
        print_json({"by_type": by_type, "tasks_by_status": tasks_by_status, "clients_by_status": clients_by_status})
        return 0
    print("tasks:   " + (", ".join(f"{n} {s}" for s, n in sorted(tasks_by_status.items())) or "none"))
    print("clients: " + (", ".join(f"{n} {s}" for s, n in sorted(clients_by_status.items())) or "none"))
    if by_type:
        print()
        rows = [
            (r["type"], r["total"], r["completed"], r["failed"],
             None if r["avg_completion_time"] is None else duration(r["avg_completion_time"])) for r in by_type
        ]
        print(format_table(("TYPE", "TOTAL", "COMPLETED", "FAILED", "AVG COMPLETION"), rows))
    return 0


async def show_config(args: argparse.Namespace, settings: Settings) -> int:
    """`aifarm config`: the effective settings and their sources."""
    values = settings_as_dict(settings)
    if args.json:
        print_json(values)
        return 0
    rows = [(name, value, settings.sources.get(name, "default")) for name, value in values.items()]
    print(format_table(("SETTING", "VALUE", "FROM"), rows))
    sys.stdout.flush()
    return 0


async def show_peers(args: argparse.Namespace, settings: Settings) -> int:
    """`aifarm peers`: what the running agent of this data dir sees on the LAN."""
    from app.agent_client import get_from_running_agent

    view = await get_from_running_agent(settings, "/api/v1/peers")
    if args.json:
        print_json(view)
        return 0
    rows = []
    for peer in view["peers"]:
        reach = {True: "yes", False: "NO", None: "?"}[peer.get("reachable")]
        back = peer.get("reaches_us")
        back_text = "?" if not isinstance(back, dict) else ("yes" if back.get("ok") else "NO")
        rows.append((peer["client_id"], peer["hostname"], ",".join(peer["addresses"]), peer["peer_port"],
                     "yes" if peer["verified"] else "no", reach, back_text, peer["source"]))
    if rows:
        print(format_table(("CLIENT", "HOST", "ADDRESSES", "PORT", "VERIFIED", "WE REACH", "REACHES US", "SOURCE"), rows))
    else:
        print(f"no peers of farm {view['farm_name']!r} seen yet")
    for peer in view["peers"]:
        if peer.get("reach_error"):
            print(f"  {peer['client_id']}: {peer['reach_error']}")
    links = view.get("links") or []
    if links:
        print("measured links from this agent:")
        print(format_table(("TO", "MBIT/S", "LATENCY MS"),
                           [(link["client_id"], f"{link['mbit_per_s']:.1f}", f"{link['latency_ms']:.2f}")
                            for link in links]))
    for peer in view["other_farms"]:
        print(f"other farm on the LAN: {peer['farm_name']!r} ({peer['client_id']} at {','.join(peer['addresses'])})")
    for client in view["not_on_lan"]:
        print(f"registered but not seen on the LAN: {client['client_id']} ({client.get('hostname') or '?'})")
    return 0


async def join_farm(args: argparse.Namespace, settings: Settings) -> int:
    """`aifarm join URL`: check the farm database, then store its URL (0600) and farm name for this data dir."""
    from app.db.queries import farms as farm_queries
    from app.db.urls import parse_database_url, redact_url
    from app.settings_file import update_local

    url = parse_database_url(args.url)
    async with farm_database(args.url) as db, db.begin() as conn:
        await farm_queries.ensure_secret(conn, args.farm_name or settings.farm_name)
    values: dict[str, Any] = {"database_url": args.url}
    if args.farm_name:
        values["farm_name"] = args.farm_name
    path = update_local(settings.data_dir, values)
    farm_name = args.farm_name or settings.farm_name
    outcome = FarmOutcome(action="join", farm_name=farm_name, database=redact_url(url), config_file=str(path),
                          restart_needed=True)
    report(args, outcome, f"joined farm {farm_name!r} at {redact_url(url)}; saved in {path}",
           "restart the agent (`aifarm run`) for it to take effect")
    return 0


async def leave_farm(args: argparse.Namespace, settings: Settings) -> int:
    """`aifarm leave`: go back to the embedded database."""
    from app.settings_file import update_local

    path = update_local(settings.data_dir, unset=("database_url", "farm_name"))
    outcome = FarmOutcome(action="leave", farm_name=None, database="embedded", config_file=str(path), restart_needed=True)
    report(args, outcome, f"left the farm; this agent uses its embedded database again ({path} updated)")
    return 0


MAX_TASK_FILE_BYTES = 1 << 20


def _read_task_file(path: str) -> Any:
    import json

    from app.errors import ValidationError

    where = "standard input" if path == "-" else path
    try:
        if path == "-":
            raw = sys.stdin.buffer.read(MAX_TASK_FILE_BYTES + 1)
        else:
            with open(path, "rb") as handle:
                raw = handle.read(MAX_TASK_FILE_BYTES + 1)
    except OSError as exc:
        raise ValidationError(f"cannot read {path}: {exc.strerror}", {"file": exc.strerror or "unreadable"}) from None
    if len(raw) > MAX_TASK_FILE_BYTES:
        raise ValidationError(f"{where} is larger than {MAX_TASK_FILE_BYTES // 1024} KiB; a task is a small JSON object",
                              {"file": "too large"})
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError(f"{where} is not UTF-8 text (byte {exc.start} cannot be decoded); save it as UTF-8",
                              {"file": "not UTF-8"}) from None
    try:
        return json.loads(text.removeprefix("\ufeff"))
    except json.JSONDecodeError as exc:
        raise ValidationError(f"{where} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                              {"file": "not valid JSON"}) from None
    except RecursionError:
        raise ValidationError(f"{where} is not a usable task: its JSON is nested too deeply",
                              {"file": "nested too deeply"}) from None
    except ValueError as exc:
        # int() refuses numbers of thousands of digits (sys.get_int_max_str_digits); the message says so.
        raise ValidationError(f"{where} is not a usable task: {exc}".split(";")[0],
                              {"file": "number too large"}) from None


async def submit_task(args: argparse.Namespace, settings: Settings) -> int:
    """`aifarm submit FILE`: validate, insert, print the id (or the task as JSON); --wait follows it."""
    from app.scheduling import service
    from app.training.catalog import Catalog

    data = _read_task_file(args.file)
    async with farm_database(settings.effective_database_url) as db:
        row = await service.submit(db, data, Catalog.load(), farm_name=settings.farm_name,
                                   dataset_dirs=settings.dataset_dirs, data_dir=settings.data_dir)
        if args.json:
            print_json(row)
        else:
            print(row["id"])
        sys.stdout.flush()
        if args.wait:
            return await _follow(db, row["id"], quiet=args.json or args.quiet)
    return 0


async def _follow(db: Database, task_id: int, *, quiet: bool) -> int:
    import asyncio

    from app.scheduling import service
    from app.textui import PERCENT, ProgressDisplay

    with ProgressDisplay(f"task {task_id}", 100.0, PERCENT, quiet=quiet) as shown:
        while True:
            task = await service.get(db, task_id)
            result = task["result"] if isinstance(task["result"], dict) else {}
            metrics = result.get("metrics") or {}
            loss = f" loss {metrics['loss']:.4f}" if isinstance(metrics.get("loss"), (int, float)) else ""
            waiting = f" ({task['waiting_for']})" if task.get("waiting_for") else ""
            shown.update(float(result.get("progress") or 0.0), f"{task['status']}{loss}{waiting}")
            if task["status"] in ("completed", "failed", "error"):
                break
            await asyncio.sleep(1.0)
    if not quiet and task["status"] != "completed" and task.get("error_log"):
        print(task["error_log"].splitlines()[-1], file=sys.stderr)
    return 0 if task["status"] == "completed" else 1


async def show_task(args: argparse.Namespace, settings: Settings) -> int:
    """`aifarm task ID`: one task in detail."""
    from app import elastic_view
    from app.db.queries import assignments as assignment_queries
    from app.scheduling import service

    async with farm_database(settings.effective_database_url) as db:
        task = await service.get(db, args.task_id)
        async with db.connect() as conn:
            ranks = await assignment_queries.list_for_task(conn, args.task_id)
            elastic = await elastic_view.read(conn, task, ranks)
    task["assignments"] = ranks
    if elastic is not None:
        task["elastic"] = elastic.as_json()
    if args.json:
        print_json(task)
        return 0
    config = task["config"] if isinstance(task["config"], dict) else {}
    print(f"task {task['id']}: {config.get('name', '-')} ({task['type']}), {task['status']}, priority {task['priority']}")
    print(f"  {config.get('model')} on {config.get('dataset')}, {config.get('n_clients', 1)} client(s), "
          f"progress {_progress(task['result'])}")
    if task.get("waiting_for"):
        print(f"  waiting: {task['waiting_for']}")
    run = task.get("run") or {}
    if run:
        print(f"  generation {run['generation']}, failed attempts {run['failures']}, coordinator {run['coordinator_id'] or '-'}")
    if elastic is not None:
        print("\n".join(elastic.text_lines()))
    else:
        for rank in ranks:
            print(f"  rank {rank['rank']}: {rank['client_id']} ({rank['status']})")
    if task.get("error_log"):
        print("  log: " + task["error_log"].splitlines()[-1])
    return 0


async def cancel_task(args: argparse.Namespace, settings: Settings) -> int:
    """`aifarm cancel ID`."""
    from app.scheduling import service

    async with farm_database(settings.effective_database_url) as db:
        status = await service.cancel(db, args.task_id)
    report(args, TaskOutcome(task_id=args.task_id, action="cancel", status=status), f"task {args.task_id} cancelled ({status})")
    return 0


async def retry_task(args: argparse.Namespace, settings: Settings) -> int:
    """`aifarm retry ID`."""
    from app.scheduling import service

    async with farm_database(settings.effective_database_url) as db:
        status = await service.retry(db, args.task_id)
    report(args, TaskOutcome(task_id=args.task_id, action="retry", status=status), f"task {args.task_id} is pending again")
    return 0


async def pause_agent(args: argparse.Namespace, settings: Settings) -> int:
    """`aifarm pause [--for 1h] [--finish-current]`: tell the running agent."""
    from app.agent_client import request_running_agent
    from app.config import parse_duration
    from app.errors import ValidationError

    body: dict[str, Any] = {"finish_current": bool(args.finish_current)}
    if args.duration:
        try:
            body["seconds"] = parse_duration(args.duration)
        except ValueError as exc:
            raise ValidationError(f"--for {args.duration!r}: {exc}", {"for": str(exc)}) from None
    # Pausing waits for the current task's emergency checkpoint (the agent gives it up to a minute).
    state = await request_running_agent(settings, "POST", "/api/v1/pause", body, timeout=PAUSE_TIMEOUT_S)
    report(args, donation_outcome(state), state.get("summary", "paused"))
    return 0


async def resume_agent(args: argparse.Namespace, settings: Settings) -> int:
    """`aifarm resume`."""
    from app.agent_client import request_running_agent

    state = await request_running_agent(settings, "POST", "/api/v1/resume", {})
    report(args, donation_outcome(state), state.get("summary", "donating"))
    return 0


async def list_models(args: argparse.Namespace, settings: Settings) -> int:
    """`aifarm models [NAME]`: versions with hash and final metrics."""
    from app.db.queries import models as model_queries

    async with farm_database(settings.effective_database_url) as db, db.connect() as conn:
        rows = await model_queries.list_versions(conn, args.name)
    if args.json:
        print_json({"models": rows})
        return 0
    if not rows:
        print("no model versions yet: they are registered when a training task completes")
        return 0
    table = []
    for row in rows:
        metrics = (row["config"] or {}).get("final_metrics") or {}
        acc = metrics.get("val_accuracy")
        table.append((row["name"], row["version"], row["hash"][:12] if row["hash"] else "-",
                      f"{acc:.3f}" if isinstance(acc, (int, float)) else "-", row["url"], relative_time(row["created_at"])))
    print(format_table(("NAME", "VERSION", "SHA256", "VAL ACC", "URL", "CREATED"), table))
    return 0


async def pull_model(args: argparse.Namespace, settings: Settings) -> int:
    """`aifarm models pull NAME[:VERSION] [-o FILE]`: download and verify."""
    from pathlib import Path

    from app.identity import read_client_id
    from app.model_store import pull
    from app.training.model_files import meta_path

    async with farm_database(settings.effective_database_url) as db:
        row, path = await pull(db, args.ref, Path(args.output) if args.output else None, settings.farm_name,
                               read_client_id(settings.data_dir), progress=not args.quiet)
    beside = f" and {meta_path(path)}" if meta_path(path).is_file() and path.suffix == ".safetensors" else ""
    print(f"{row['name']} v{row['version']} saved to {path}{beside} (sha256 {row['hash']} verified)")
    return 0


async def try_model(args: argparse.Namespace, settings: Settings) -> int:
    """`aifarm models try NAME[:VERSION]`: a prompt in, sampled text out; or an image in, the top classes out."""
    import subprocess
    import sys

    from app.errors import AifarmError
    from app.identity import read_client_id
    from app.model_store import local_model, try_problem

    async with farm_database(settings.effective_database_url) as db:
        row, path = await local_model(db, args.ref, settings.data_dir, settings.farm_name,
                                      read_client_id(settings.data_dir))
    if not 1 <= args.max_tokens <= 100_000 or not 0 <= args.temperature <= 100:
        raise AifarmError("--max-tokens must be 1 to 100000 and --temperature 0 to 100")
    problem = try_problem(row, path, image=args.image is not None)
    if problem:
        raise AifarmError(problem)
    # name=value: a prompt that starts with '-' stays a prompt.
    command = [sys.executable, "-m", "app.training.try_model", str(path), f"--max-tokens={args.max_tokens}",
               f"--temperature={args.temperature}"]
    command += [f"--image={args.image}"] if args.image else [f"--prompt={args.prompt or ''}"]
    return subprocess.run(command, check=False).returncode


async def open_dashboard(args: argparse.Namespace, settings: Settings) -> int:
    """`aifarm dashboard [--open]`: a fresh one-time sign-in link of the running agent."""
    from app.agent_client import request_running_agent

    link = await request_running_agent(settings, "POST", "/api/v1/login-link", {})
    print(link["url"])
    if args.open:
        import webbrowser

        webbrowser.open(link["url"])
    return 0


async def prefs(args: argparse.Namespace, settings: Settings) -> int:
    """`aifarm prefs [set NAME VALUE | unset NAME]`: the volunteer's donation preferences (no restart needed)."""
    from app.agent_client import request_running_agent
    from app.donation import idle_support
    from app.errors import ConfigError
    from app.prefs import PREFS, WHOLE, apply_prefs
    from app.runtime_files import read_running_agent

    if args.prefs_command in ("set", "unset"):
        value = args.value if args.prefs_command == "set" else None
        problems = apply_prefs(settings.data_dir, {args.name: value})
        if WHOLE in problems or args.name not in PREFS:
            raise ConfigError(problems.get(WHOLE) or problems[args.name])
        if problems:
            raise ConfigError(f"setting {args.name} = {args.value!r} is invalid: {problems[args.name]}")
        running = read_running_agent(settings.data_dir) is not None
        if running:
            await request_running_agent(settings, "POST", "/api/v1/prefs/reload", {})
        done = "set" if args.prefs_command == "set" else "reset"
        when = "the running agent applied it" if running else "it applies when the agent starts"
        report(args, PrefOutcome(name=args.name, action=args.prefs_command, value=value, applied_now=running),
               f"{args.name} {done}; {when}")
        return 0
    values = {name: getattr(settings, name) for name in PREFS}
    values["dataset_dirs"] = tuple(str(d) for d in settings.dataset_dirs)
    if args.json:
        print_json({**{k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}, "idle_detection": idle_support()})
        return 0
    shown = {**values, "dataset_dirs": ", ".join(values["dataset_dirs"]) or None}
    print(format_table(("PREFERENCE", "VALUE", "FROM"),
                       [(k, "-" if v is None else v, settings.sources.get(k, "default")) for k, v in shown.items()]))
    print(f"idle detection: {idle_support()}")
    return 0


async def doctor(args: argparse.Namespace, settings: Settings) -> int:
    """`aifarm doctor`: check the database, ports, network, GPU, tray, sandbox and disk; exit 1 on a problem."""
    from dataclasses import asdict

    from app.doctor import report, run_checks

    findings = await run_checks(settings)
    if args.json:
        print_json([asdict(finding) for finding in findings])
    else:
        print(report(findings))
    return 1 if any(finding.verdict == "problem" for finding in findings) else 0


async def show_logs(args: argparse.Namespace, settings: Settings) -> int:
    """`aifarm logs [-f] [-n N]`: the last lines of this data dir's agent log, then new ones with -f."""
    from app.agentlog import follow, log_path, tail
    from app.errors import NotFound, ValidationError

    path = log_path(settings.data_dir)
    if args.lines < 0 or args.lines > 1_000_000:
        raise ValidationError("--lines must be between 0 and 1000000", {"lines": "out of range"})
    if not path.exists() and not args.follow:
        raise NotFound(f"no agent log yet at {path} (it is written while `aifarm run` runs)")
    for line in tail(path, args.lines):
        print(line)
    sys.stdout.flush()
    if args.follow:
        for line in follow(path):  # until Ctrl-C: nothing else runs in this command
            print(line, flush=True)
    return 0


async def agent_status(args: argparse.Namespace, settings: Settings) -> int:
    """`aifarm status`: whether this data dir's agent runs, and its pid, dashboard, donation, task and database."""
    from app.agent_client import get_from_running_agent
    from app.db.urls import redact_text
    from app.runtime_files import read_running_agent

    info = read_running_agent(settings.data_dir)
    if info is None:
        status: dict[str, Any] = {"running": False, "data_dir": str(settings.data_dir),
                                  "database": redact_text(settings.effective_database_url)}
    else:
        described = await get_from_running_agent(settings, "/api/v1/status")
        running = (described.get("work") or {}).get("running") or {}
        status = {"running": True, "pid": info["pid"], "data_dir": str(settings.data_dir),
                  "dashboard_url": described.get("dashboard_url"), "donation": described["donation"]["summary"],
                  "current_task": running.get("task_id"), "database": described.get("database"),
                  "database_ok": described.get("database_ok"), "client_id": described.get("client_id"),
                  "training": (described.get("training") or {}).get("reason") or "yes"}
    if args.json:
        print_json(status)
    elif not status["running"]:
        print(f"not running (data dir {status['data_dir']}; database {status['database']})")
    else:
        task = f"task {status['current_task']}" if status["current_task"] else "none"
        rows = [("state", "running"), ("pid", status["pid"]), ("client", status["client_id"]),
                ("dashboard", status["dashboard_url"]), ("donation", status["donation"]), ("training", status["training"]),
                ("current task", task),
                ("database", f"{status['database']}{'' if status['database_ok'] else ' (unreachable)'}"),
                ("data dir", status["data_dir"])]
        print("\n".join(f"{name + ':':<14}{value}" for name, value in rows))
    return 0 if status["running"] else 3


async def stop_agent(args: argparse.Namespace, settings: Settings) -> int:
    """`aifarm stop`: a clean stop of this data dir's agent (as Ctrl-C), waiting until it has exited."""
    import asyncio

    import psutil

    from app.agent_client import request_running_agent
    from app.errors import AifarmError
    from app.runtime_files import read_running_agent

    info = read_running_agent(settings.data_dir)
    if info is None:
        report(args, StopOutcome(pid=None, was_running=False, stopped=False), f"no agent is running for {settings.data_dir}")
        return 0
    pid = int(info["pid"])
    try:
        await request_running_agent(settings, "POST", "/api/v1/shutdown")
    except AifarmError:
        if sys.platform == "win32":
            raise
        psutil.Process(pid).terminate()  # SIGTERM: the same clean stop, when the dashboard does not answer
    deadline = asyncio.get_running_loop().time() + args.timeout
    while _alive(pid) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.2)
    if _alive(pid):
        raise AifarmError(f"the agent (pid {pid}) has not stopped within {args.timeout:.0f} s; it may still be "
                          "writing an emergency checkpoint")
    report(args, StopOutcome(pid=pid, was_running=True, stopped=True), f"agent (pid {pid}) stopped")
    return 0


def _alive(pid: int) -> bool:
    """True while a process runs (an exited one its parent has not reaped yet counts as gone)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


COMPLETION_SHELLS = ("bash", "zsh", "fish")


async def completion(args: argparse.Namespace, settings: Settings | None) -> int:
    """`aifarm completion SHELL`: the shell code that registers `aifarm` with argcomplete (no settings are read)."""
    from argcomplete.shell_integration import shellcode

    sys.stdout.write(shellcode(["aifarm"], shell=args.shell))
    return 0
