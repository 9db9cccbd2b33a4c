"""SQL of scheduling: claiming ranks, forming a group, fencing by generation, ending attempts, retry.

The decisions (which rank, who coordinates, what status an ended attempt leaves) are made in
app/scheduling/claiming.py with the pure functions of app/scheduling/decide.py; these functions only read and write.

Every function runs inside the caller's transaction. On MySQL/MariaDB the task row is locked with
FOR UPDATE (SKIP LOCKED when claiming), on SQLite the whole write transaction is serialised by
BEGIN IMMEDIATE; the unique key (task_id, rank) is the backstop, and a client never takes two ranks of a task.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, and_, cast, delete, exists, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db import dialect
from app.db.queries import row_dict
from app.db.schema import clients, task_assignments, task_runs, tasks
from app.errors import Conflict, Fenced, NotFound
from app.scheduling.decide import Capacity, Recipes, min_clients_of, n_clients_of

MAX_ERROR_LOG = 60_000


def _requirement(conn: AsyncConnection, key: str) -> Any:
    return func.coalesce(dialect.json_number(conn, tasks.c.requirements, f"$.{key}"), 0)


@dataclass(frozen=True)
class Claimable:
    """A task locked for a claim: its id and the smallest and largest size of its group."""

    task_id: int
    n_clients: int
    min_clients: int


def _claimable(row: Any) -> Claimable:
    return Claimable(int(row.id), n_clients_of(row.config), min_clients_of(row.config))


async def db_now(conn: AsyncConnection) -> datetime:
    """The database server's current time (naive UTC), the clock every liveness decision uses."""
    value = (await conn.execute(select(dialect.now(conn)))).scalar_one()
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def _runnable_here(conn: AsyncConnection, query: Any, capacity: Capacity, skip_task_ids: Sequence[int],
                   recipes: Recipes | None) -> Any:
    """The query narrowed to tasks this capacity meets and whose recipes (or bundle) are installed, best first."""
    query = (
        query.where(
            _requirement(conn, "min_gpu_memory") <= capacity.gpu_memory_mb,
            _requirement(conn, "min_cpu_cores") <= capacity.cpu_cores,
            _requirement(conn, "min_ram") <= capacity.ram_mb,
        )
        .order_by(tasks.c.priority.desc(), tasks.c.created_at.asc(), tasks.c.id.asc())
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    if skip_task_ids:
        query = query.where(tasks.c.id.not_in(list(skip_task_ids)))
    if recipes is not None:
        bundle = dialect.json_text(conn, tasks.c.config, "$.bundle")
        installed = and_(bundle.is_(None),
                         dialect.json_text(conn, tasks.c.config, "$.model").in_(sorted(recipes.models) or [""]),
                         dialect.json_text(conn, tasks.c.config, "$.dataset").in_(sorted(recipes.datasets) or [""]))
        query = query.where(or_(installed, bundle.in_(sorted(recipes.bundles) or [""])))
    return query


async def next_pending(conn: AsyncConnection, capacity: Capacity, *, skip_task_ids: Sequence[int] = (),
                       recipes: Recipes | None = None) -> Claimable | None:
    """Lock the best pending task this capacity meets (and whose recipes are installed)."""
    query = select(tasks.c.id, tasks.c.config).where(tasks.c.status == "pending")
    row = (await conn.execute(_runnable_here(conn, query, capacity, skip_task_ids, recipes))).first()
    return _claimable(row) if row is not None else None


def _json_int(conn: AsyncConnection, path: str) -> Any:
    # MariaDB's JSON_EXTRACT returns text, and text compares as text ('10' < '9'): compare whole numbers.
    return cast(dialect.json_number(conn, tasks.c.config, path), Integer)


async def next_joinable(conn: AsyncConnection, client_id: str, capacity: Capacity, *,
                        skip_task_ids: Sequence[int] = (), recipes: Recipes | None = None) -> Claimable | None:
    """Lock the best running elastic task with fewer members than n_clients that this client may join."""
    members = (select(func.count()).select_from(task_assignments)
               .where(task_assignments.c.task_id == tasks.c.id).scalar_subquery())
    mine = exists().where(task_assignments.c.task_id == tasks.c.id, task_assignments.c.client_id == client_id)
    query = select(tasks.c.id, tasks.c.config).where(
        tasks.c.status == "running",
        _json_int(conn, "$.min_clients") < _json_int(conn, "$.n_clients"),
        members < _json_int(conn, "$.n_clients"),
        ~mine,
    )
    row = (await conn.execute(_runnable_here(conn, query, capacity, skip_task_ids, recipes))).first()
    return _claimable(row) if row is not None else None


async def pending_for_other_recipes(conn: AsyncConnection, recipes: Recipes, *, exclude: Sequence[int] = (),
                                    limit: int = 20) -> list[tuple[int, str, str]]:
    """Pending tasks naming a model or dataset recipe not in `recipes`: (task id, model, dataset)."""
    model = dialect.json_text(conn, tasks.c.config, "$.model")
    dataset = dialect.json_text(conn, tasks.c.config, "$.dataset")
    query = (select(tasks.c.id, model.label("model"), dataset.label("dataset"))
             .where(tasks.c.status == "pending", dialect.json_text(conn, tasks.c.config, "$.bundle").is_(None),
                    model.not_in(sorted(recipes.models) or [""]) | dataset.not_in(sorted(recipes.datasets) or [""]))
             .order_by(tasks.c.id).limit(limit))
    if exclude:
        query = query.where(tasks.c.id.not_in(list(exclude)))
    return [(int(r.id), str(r.model), str(r.dataset)) for r in await conn.execute(query)]


async def rank_holders(conn: AsyncConnection, task_id: int) -> dict[str, int]:
    """The clients holding a rank of the task, with their ranks."""
    rows = await conn.execute(select(task_assignments.c.client_id, task_assignments.c.rank)
                              .where(task_assignments.c.task_id == task_id))
    return {row.client_id: row.rank for row in rows}


async def add_rank(conn: AsyncConnection, task_id: int, client_id: str, rank: int, *, touch: bool) -> None:
    """Take a rank (the unique key refuses a taken one); `touch` marks the task as changed."""
    await conn.execute(
        insert(task_assignments).values(task_id=task_id, client_id=client_id, rank=rank, status="assigned")
    )
    if touch:
        await conn.execute(update(tasks).where(tasks.c.id == task_id).values(updated_at=dialect.now(conn)))


async def lock_task(conn: AsyncConnection, task_id: int) -> tuple[str, Claimable] | None:
    """Lock the task row: its status and group sizes; None when there is no such task."""
    row = (await conn.execute(select(tasks.c.id, tasks.c.status, tasks.c.config)
                              .where(tasks.c.id == task_id).with_for_update())).first()
    return (str(row.status), _claimable(row)) if row is not None else None


async def group_sizes(conn: AsyncConnection, task_id: int) -> tuple[int, int]:
    """The task's (min_clients, n_clients) from its config; (1, 1) when there is no such task."""
    config = (await conn.execute(select(tasks.c.config).where(tasks.c.id == task_id))).scalar_one_or_none()
    return min_clients_of(config), n_clients_of(config)


async def claimed_within(conn: AsyncConnection, task_id: int, seconds: float) -> bool:
    """True when a rank of the task was taken less than `seconds` ago (whole seconds, the database's clock)."""
    recent = exists().where(task_assignments.c.task_id == task_id,
                            task_assignments.c.assigned_at > dialect.seconds_ago(conn, seconds))
    return bool((await conn.execute(select(recent))).scalar())


async def remove_ranks(conn: AsyncConnection, task_id: int, client_ids: Sequence[str]) -> None:
    """Free the ranks these clients hold in the task."""
    await conn.execute(delete(task_assignments).where(task_assignments.c.task_id == task_id,
                                                      task_assignments.c.client_id.in_(list(client_ids))))


async def group_rows(conn: AsyncConnection, task_id: int) -> list[dict[str, Any]]:
    """The rank holders of a task with what an election and a rendezvous need: hardware, host name, session."""
    rows = await conn.execute(
        select(task_assignments.c.id, task_assignments.c.client_id, task_assignments.c.rank,
               clients.c.gpu_info, clients.c.cpu_info, clients.c.hostname, clients.c.session_info)
        .select_from(task_assignments.join(clients, clients.c.id == task_assignments.c.client_id))
        .where(task_assignments.c.task_id == task_id)
        .order_by(task_assignments.c.rank)
    )
    return [row_dict(row) for row in rows]


async def renumber(conn: AsyncConnection, moves: dict[int, int]) -> None:
    """Give assignment rows (by id) their new ranks, keeping (task_id, rank) unique at every moment."""
    if not moves:
        return
    # Only rows whose rank changes are touched: rewriting a unique key to the same value still deletes and
    # re-inserts its index entry, and on InnoDB those gap locks deadlock concurrent formations.
    await conn.execute(
        update(task_assignments).where(task_assignments.c.id.in_(list(moves)))
        .values(rank=-1 - task_assignments.c.rank)
    )
    for row_id, rank in moves.items():
        await conn.execute(update(task_assignments).where(task_assignments.c.id == row_id).values(rank=rank))


async def start_generation(conn: AsyncConnection, task_id: int, coordinator_id: str) -> int:
    """Mark the task running under its coordinator and open a new generation; returns it."""
    await conn.execute(update(tasks).where(tasks.c.id == task_id)
                       .values(status="running", client_id=coordinator_id, updated_at=dialect.now(conn)))
    return await _bump_generation(conn, task_id, coordinator_id=coordinator_id, formed=True)


async def _bump_generation(conn: AsyncConnection, task_id: int, *, coordinator_id: str | None, formed: bool,
                           add_failure: int = 0) -> int:
    now = dialect.now(conn)
    values = {
        "generation": task_runs.c.generation + 1,
        "failures": task_runs.c.failures + add_failure,
        "coordinator_id": coordinator_id,
        "rendezvous_host": None,
        "rendezvous_port": None,
        "formed_at": now if formed else None,
        "updated_at": now,
    }
    insert_values = {**values, "task_id": task_id, "generation": 1, "failures": add_failure}
    if dialect.is_mysql(conn):
        # LAST_INSERT_ID(expr) puts the new generation in the statement's own reply: no SELECT round trip.
        insert_values["generation"] = func.last_insert_id(1)
        values["generation"] = func.last_insert_id(task_runs.c.generation + 1)
        result = await conn.execute(dialect.upsert(conn, task_runs, insert_values, values))
        return int(result.lastrowid)
    await conn.execute(dialect.upsert(conn, task_runs, insert_values, values))
    return int((await conn.execute(select(task_runs.c.generation).where(task_runs.c.task_id == task_id))).scalar_one())


async def get_run(conn: AsyncConnection, task_id: int) -> dict[str, Any] | None:
    """The task's run row (generation, failures, coordinator, rendezvous), or None before its first claim."""
    row = (await conn.execute(select(task_runs).where(task_runs.c.task_id == task_id))).first()
    return row_dict(row) if row else None


async def _lock_run(conn: AsyncConnection, task_id: int) -> dict[str, Any] | None:
    row = (await conn.execute(select(task_runs).where(task_runs.c.task_id == task_id).with_for_update())).first()
    return row_dict(row) if row else None


async def check_fence(conn: AsyncConnection, task_id: int, generation: int, coordinator_id: str | None = None, *,
                      just_ended: bool = False) -> None:
    """Lock the run row and raise Fenced unless the generation (and coordinator, if given) are current; with
    `just_ended`, also the generation whose attempt ended last when no group formed since."""
    run = await _lock_run(conn, task_id)
    if just_ended and run is not None and run["generation"] == generation + 1 and run["formed_at"] is None:
        return
    if run is None or run["generation"] != generation:
        current = run["generation"] if run else None
        raise Fenced(f"task {task_id}: generation {generation} is no longer current ({current})")
    if coordinator_id is not None and run["coordinator_id"] != coordinator_id:
        raise Fenced(f"task {task_id}: {coordinator_id} is not the coordinator of generation {generation}")


async def publish_rendezvous(conn: AsyncConnection, task_id: int, generation: int, coordinator_id: str,
                             host: str, port: int) -> None:
    """Rank 0 publishes where the other ranks meet it; Fenced for an outdated coordinator."""
    result = await conn.execute(
        update(task_runs)
        .where(task_runs.c.task_id == task_id, task_runs.c.generation == generation,
               task_runs.c.coordinator_id == coordinator_id)
        .values(rendezvous_host=host, rendezvous_port=port, updated_at=dialect.now(conn))
    )
    if result.rowcount != 1:
        raise Fenced(f"task {task_id}: cannot publish a rendezvous for generation {generation}")


async def update_task_fenced(conn: AsyncConnection, task_id: int, generation: int, coordinator_id: str,
                             values: dict[str, Any]) -> None:
    """Write the task row as its coordinator of this generation (progress, result, checkpoint, completion)."""
    current = exists().where(
        task_runs.c.task_id == task_id, task_runs.c.generation == generation, task_runs.c.coordinator_id == coordinator_id
    )
    result = await conn.execute(
        update(tasks)
        .where(tasks.c.id == task_id, tasks.c.status == "running", current)
        .values(**values, updated_at=dialect.now(conn))
    )
    if result.rowcount != 1:
        raise Fenced(f"task {task_id}: write refused, {coordinator_id} is not the coordinator of generation {generation}")


async def set_assignment(conn: AsyncConnection, task_id: int, client_id: str, generation: int, **values: Any) -> None:
    """Update this client's assignment of the current generation (status, metrics, checkpoint_path)."""
    current = exists().where(task_runs.c.task_id == task_id, task_runs.c.generation == generation)
    result = await conn.execute(
        update(task_assignments)
        .where(task_assignments.c.task_id == task_id, task_assignments.c.client_id == client_id, current)
        .values(**values)
    )
    if result.rowcount != 1:
        raise Fenced(f"task {task_id}: the assignment of {client_id} in generation {generation} is gone")


async def release_join(conn: AsyncConnection, task_id: int, client_id: str) -> bool:
    """Give back a rank of a task whose group has not formed yet; False when it already formed."""
    still_pending = exists().where(tasks.c.id == task_id, tasks.c.status == "pending")
    result = await conn.execute(
        delete(task_assignments).where(
            task_assignments.c.task_id == task_id, task_assignments.c.client_id == client_id, still_pending
        )
    )
    return result.rowcount > 0


async def members_of_running(conn: AsyncConnection, task_id: int | None = None) -> dict[int, dict[str, Any]]:
    """Per running task: generation and its members with assignment status and client liveness."""
    query = (
        select(
            tasks.c.id.label("task_id"),
            task_runs.c.generation,
            task_assignments.c.client_id,
            task_assignments.c.rank,
            task_assignments.c.status,
            clients.c.status.label("client_status"),
            clients.c.last_seen,
        )
        .select_from(
            tasks.join(task_runs, task_runs.c.task_id == tasks.c.id)
            .join(task_assignments, task_assignments.c.task_id == tasks.c.id)
            .join(clients, clients.c.id == task_assignments.c.client_id)
        )
        .where(tasks.c.status == "running")
    )
    if task_id is not None:
        query = query.where(tasks.c.id == task_id)
    out: dict[int, dict[str, Any]] = {}
    for row in await conn.execute(query):
        entry = out.setdefault(row.task_id, {"generation": row.generation, "members": []})
        entry["members"].append(row_dict(row))
    return out


def _append_log(existing: str | None, line: str) -> str:
    text = f"{existing}\n{line}" if existing else line
    return text[-MAX_ERROR_LOG:]


@dataclass(frozen=True)
class AttemptState:
    """What ending an attempt decides from: the run's generation and failures, the task's status and error log."""

    generation: int
    failures: int
    task_status: str
    error_log: str | None


async def lock_attempt(conn: AsyncConnection, task_id: int) -> AttemptState | None:
    """Lock the run row and read the attempt's state; None before the task's first formation."""
    run = await _lock_run(conn, task_id)
    if run is None:
        return None
    task = (await conn.execute(select(tasks.c.status, tasks.c.error_log).where(tasks.c.id == task_id))).first()
    if task is None:
        return None
    return AttemptState(run["generation"], run["failures"], task.status, task.error_log)


async def close_attempt(conn: AsyncConnection, task_id: int, status: str, note: str, error_log: str | None, *,
                        failure: bool) -> None:
    """Free the ranks, set the task's new status with a note in its error log, and fence the generation."""
    await conn.execute(delete(task_assignments).where(task_assignments.c.task_id == task_id))
    await conn.execute(
        update(tasks).where(tasks.c.id == task_id).values(
            status=status, client_id=None, updated_at=dialect.now(conn), error_log=_append_log(error_log, note)
        )
    )
    await _bump_generation(conn, task_id, coordinator_id=None, formed=False, add_failure=1 if failure else 0)


async def release_stale_joins(conn: AsyncConnection, join_timeout: float, failure_timeout: float) -> int:
    """Free ranks of pending tasks held longer than join_timeout, or by a client that stopped heartbeating."""
    pending = select(tasks.c.id).where(tasks.c.status == "pending")
    dead = select(clients.c.id).where(
        (clients.c.status != "active") | (clients.c.last_seen < dialect.seconds_ago(conn, failure_timeout))
    )
    result = await conn.execute(
        delete(task_assignments).where(
            task_assignments.c.status == "assigned",
            task_assignments.c.task_id.in_(pending.scalar_subquery()),
            (task_assignments.c.assigned_at < dialect.seconds_ago(conn, join_timeout))
            | task_assignments.c.client_id.in_(dead.scalar_subquery()),
        )
    )
    return result.rowcount


async def assignments_of_client(conn: AsyncConnection, client_id: str) -> list[dict[str, Any]]:
    """Every assignment this client holds, with its task's status and current generation."""
    query = (
        select(task_assignments.c.task_id, task_assignments.c.rank, task_assignments.c.status,
               tasks.c.status.label("task_status"), task_runs.c.generation)
        .select_from(
            task_assignments.join(tasks, tasks.c.id == task_assignments.c.task_id)
            .outerjoin(task_runs, task_runs.c.task_id == tasks.c.id)
        )
        .where(task_assignments.c.client_id == client_id)
    )
    return [row_dict(row) for row in await conn.execute(query)]


async def lock_task_status(conn: AsyncConnection, task_id: int) -> str | None:
    """Lock the task row and read its status; None when there is no such task."""
    row = (await conn.execute(select(tasks.c.status).where(tasks.c.id == task_id).with_for_update())).first()
    return row.status if row is not None else None


async def fail_unformed(conn: AsyncConnection, task_id: int, note: str) -> None:
    """End a task that has no attempt yet as failed, freeing its ranks."""
    await conn.execute(delete(task_assignments).where(task_assignments.c.task_id == task_id))
    await conn.execute(update(tasks).where(tasks.c.id == task_id).values(
        status="failed", client_id=None, updated_at=dialect.now(conn), error_log=_append_log(None, note)))


async def retry(conn: AsyncConnection, task_id: int) -> str:
    """Put a failed or errored task back in the queue with a fresh attempt budget."""
    task = (await conn.execute(select(tasks.c.status, tasks.c.error_log).where(tasks.c.id == task_id).with_for_update())).first()
    if task is None:
        raise NotFound(f"task {task_id} does not exist")
    if task.status not in ("failed", "error"):
        raise Conflict(f"task {task_id} is {task.status}; only failed or error tasks can be retried")
    await conn.execute(delete(task_assignments).where(task_assignments.c.task_id == task_id))
    await conn.execute(update(tasks).where(tasks.c.id == task_id).values(
        status="pending", client_id=None, updated_at=dialect.now(conn),
        error_log=_append_log(task.error_log, "retried by the user")))
    if await get_run(conn, task_id) is not None:
        await conn.execute(update(task_runs).where(task_runs.c.task_id == task_id).values(
            failures=0, generation=task_runs.c.generation + 1, coordinator_id=None, rendezvous_host=None,
            rendezvous_port=None, formed_at=None, updated_at=dialect.now(conn)))
    return "pending"


async def set_priority(conn: AsyncConnection, task_id: int, priority: int) -> None:
    """Change a task's priority."""
    result = await conn.execute(
        update(tasks).where(tasks.c.id == task_id).values(priority=priority, updated_at=dialect.now(conn))
    )
    if result.rowcount != 1:
        raise NotFound(f"task {task_id} does not exist")


async def active_hardware(conn: AsyncConnection) -> list[dict[str, Any]]:
    """The registered hardware (gpu_info, cpu_info, ram_info) of every active client."""
    rows = await conn.execute(select(clients.c.gpu_info, clients.c.cpu_info, clients.c.ram_info)
                              .where(clients.c.status == "active"))
    return [row_dict(row) for row in rows]
