"""Task operations shared by the CLI, the API and the dashboard: submit, cancel, retry, priority, why pending."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.bundles.manifest import BundleError, parse_manifest, parse_ref
from app.db.engine import Database
from app.db.queries import bundles as bundle_queries
from app.db.queries import claims as claim_queries
from app.db.queries import dataset_hosts as host_queries
from app.db.queries import datasets as dataset_queries
from app.db.queries import logs as log_queries
from app.db.queries import tasks as task_queries
from app.errors import NotFound, ValidationError
from app.scheduling import claiming
from app.scheduling.decide import explain_pending, min_clients_of
from app.scheduling.validation import BundleChoice, BundleLookup, TaskSpec, published_problems, validate_task
from app.training.catalog import Catalog
from app.training.sources import SourcePolicy


async def source_policy(db: Database, farm_name: str, dataset_dirs: tuple[Path, ...]) -> SourcePolicy:
    """What a submission from this machine may name: its own dataset_dirs and the farm's dataset hosts."""
    async with db.connect() as conn:
        hosts = await host_queries.list_hosts(conn, farm_name)
    return SourcePolicy(dirs=tuple(dataset_dirs), hosts=tuple(hosts))


async def check_published(db: Database, spec: TaskSpec, catalog: Catalog, data_dir: Path | None) -> None:
    """ValidationError naming the field when the task's published dataset is unknown, broken or does not fit."""
    from app.datasets.manifest import dataset_folder
    from app.datasets.options import wanted

    want = wanted(spec.config)
    if want is None:
        return
    async with db.connect() as conn:
        row = await dataset_queries.get(conn, want.name, want.version) if want.name else None
    local = dataset_folder(data_dir, row.name, row.version) if row is not None and data_dir is not None else None
    problems = published_problems(spec.config, row.manifest if row is not None else None, catalog, local)
    if problems:
        listed = "; ".join(f"{path}: {message}" for path, message in problems.items())
        raise ValidationError(f"invalid task ({len(problems)} problem{'s' if len(problems) > 1 else ''}): {listed}",
                              problems)


async def submit(db: Database, data: Any, catalog: Catalog, client_id: str | None = None, *,
                 farm_name: str, dataset_dirs: tuple[Path, ...], data_dir: Path | None = None) -> dict[str, Any]:
    """Validate and insert a task as pending; returns the new row. Nothing is written when it is invalid."""
    spec = validate_task(data, catalog, await source_policy(db, farm_name, dataset_dirs), await _bundles_named(db, data))
    await check_published(db, spec, catalog, data_dir)
    async with db.begin() as conn:
        task_id = await task_queries.insert_task(
            conn, type=spec.type, requirements=spec.requirements, config=spec.config, priority=spec.priority
        )
        await log_queries.add_task_log(conn, task_id, client_id, "info", f"submitted: {spec.config['name']} "
                                       f"({spec.config['model']} on {spec.config['dataset']}, "
                                       f"{spec.config['n_clients']} client(s), priority {spec.priority})")
        row = await task_queries.get_task(conn, task_id)
    assert row is not None
    return row


async def _bundles_named(db: Database, data: Any) -> BundleLookup:
    """The bundle a submitted task names, resolved: NAME is its newest version that is not revoked."""
    config = data.get("config") if isinstance(data, dict) else None
    given = config.get("bundle") if isinstance(config, dict) else None
    if not isinstance(given, str):
        return {}
    try:
        ref = parse_ref(given)
    except ValueError as exc:
        return {given: str(exc)}
    async with db.connect() as conn:
        rows = await bundle_queries.versions(conn, ref.name)
    rows = [r for r in rows if ref.version in (None, r.version)]
    live = [r for r in rows if r.revoked_at is None]
    if not live:
        return {given: f"bundle {given} is revoked" if rows else f"no bundle {given} is published in this farm"}
    try:
        manifest = parse_manifest(live[0].manifest)
    except BundleError as exc:
        return {given: str(exc)}
    return {given: BundleChoice(live[0].ref, frozenset(manifest.models()), frozenset(manifest.datasets()))}


async def get(db: Database, task_id: int) -> dict[str, Any]:
    """A task with its run state and, while pending, why it waits."""
    async with db.connect() as conn:
        row = await task_queries.get_task(conn, task_id)
        if row is None:
            raise NotFound(f"task {task_id} does not exist")
        run = await claim_queries.get_run(conn, task_id)
        waiting = None
        if row["status"] == "pending":
            waiting = await _why_pending(conn, row)
    return {**row, "run": run, "waiting_for": waiting}


async def _why_pending(conn: Any, row: dict[str, Any]) -> str | None:
    # An elastic group forms with min_clients: that is how many able clients it waits for.
    return explain_pending(row["requirements"] or {}, await claiming.active_capacities(conn),
                           min_clients_of(row["config"]))


async def active_capacities(db: Database) -> list[Any]:
    """What every active client offers (hardware as registered)."""
    async with db.connect() as conn:
        return await claiming.active_capacities(conn)


async def why_pending(db: Database, rows: list[dict[str, Any]]) -> dict[int, str | None]:
    """For each pending row, why no active client can take it (None: it can be claimed)."""
    return why_pending_with(rows, await active_capacities(db))


def why_pending_with(rows: list[dict[str, Any]], capacities: list[Any]) -> dict[int, str | None]:
    """why_pending over capacities already read."""
    out = {}
    for row in rows:
        if row["status"] != "pending":
            continue
        out[row["id"]] = explain_pending(row["requirements"] or {}, capacities, min_clients_of(row["config"]))
    return out


async def cancel(db: Database, task_id: int, client_id: str | None = None) -> str:
    """Cancel a pending or running task."""
    async with db.begin() as conn:
        status = await claiming.cancel(conn, task_id)
        await log_queries.add_task_log(conn, task_id, client_id, "warning", "cancelled by the user")
    return status


async def retry(db: Database, task_id: int, client_id: str | None = None) -> str:
    """Re-queue a failed or errored task."""
    async with db.begin() as conn:
        status = await claim_queries.retry(conn, task_id)
        await log_queries.add_task_log(conn, task_id, client_id, "info", "retried by the user")
    return status


async def set_priority(db: Database, task_id: int, priority: int) -> None:
    """Change a task's priority (validated like a submission's)."""
    from app.errors import ValidationError

    if isinstance(priority, bool) or not isinstance(priority, int) or not -1000 <= priority <= 1000:
        raise ValidationError("priority must be a whole number between -1000 and 1000",
                              {"priority": "must be a whole number between -1000 and 1000"})
    async with db.begin() as conn:
        await claim_queries.set_priority(conn, task_id, priority)
