"""SQL of scheduling: claiming ranks, forming a group, fencing by generation, ending attempts, cancel and retry.

Every function runs inside the caller's transaction. On MySQL/MariaDB the task row is locked with
FOR UPDATE (SKIP LOCKED when claiming), on SQLite the whole write transaction is serialised by
BEGIN IMMEDIATE; the unique key (task_id, rank) is the backstop, and a client never takes two ranks of a task.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, exists, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db import dialect
from app.db.queries import row_dict
from app.db.schema import clients, task_assignments, task_runs, tasks
from app.errors import Conflict, Fenced, NotFound
from app.scheduling.decide import (
    Capacity,
    Member,
    after_failure,
    cpu_cores_of,
    elect,
    gpu_memory_of,
    lowest_free_rank,
    ram_of,
)
from app.statuses import OPEN_TASK_STATUSES

MAX_ERROR_LOG = 60_000


@dataclass(frozen=True)
class Claim:
    """A rank this client took, and whether the group formed with it."""

    task_id: int
    rank: int
    n_clients: int
    formed: bool
    generation: int | None


@dataclass(frozen=True)
class Formation:
    """The elected group of a task."""

    task_id: int
    generation: int
    coordinator_id: str
    ranks: dict[str, int]


def _requirement(conn: AsyncConnection, key: str) -> Any:
    return func.coalesce(dialect.json_number(conn, tasks.c.requirements, f"$.{key}"), 0)


def _n_clients(config: Any) -> int:
    if isinstance(config, dict) and config.get("distributed") and isinstance(config.get("n_clients"), int):
        return max(1, int(config["n_clients"]))
    return 1


async def db_now(conn: AsyncConnection) -> datetime:
    """The database server's current time (naive UTC), the clock every liveness decision uses."""
    value = (await conn.execute(select(dialect.now(conn)))).scalar_one()
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


async def claim_next(
    conn: AsyncConnection, client_id: str, capacity: Capacity, *, skip_task_ids: Sequence[int] = ()
) -> Claim | None:
    """Take the lowest free rank of the best pending task this capacity meets; form the group if it is now full."""
    query = (
        select(tasks.c.id, tasks.c.config)
        .where(
            tasks.c.status == "pending",
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
    row = (await conn.execute(query)).first()
    if row is None:
        return None
    task_id, n_clients = int(row.id), _n_clients(row.config)
    holders = (await conn.execute(select(task_assignments.c.rank, task_assignments.c.client_id)
                                  .where(task_assignments.c.task_id == task_id))).all()
    if any(holder.client_id == client_id for holder in holders):
        return None  # one rank per client per task: the schema allows several, form_group's election does not
    taken = [holder.rank for holder in holders]
    rank = lowest_free_rank(taken, n_clients)
    if rank is None:
        return None
    await conn.execute(
        insert(task_assignments).values(task_id=task_id, client_id=client_id, rank=rank, status="assigned")
    )
    if len(taken) + 1 < n_clients:
        await conn.execute(update(tasks).where(tasks.c.id == task_id).values(updated_at=dialect.now(conn)))
        return Claim(task_id, rank, n_clients, formed=False, generation=None)
    formation = await form_group(conn, task_id)
    return Claim(task_id, formation.ranks[client_id], n_clients, formed=True, generation=formation.generation)


async def form_group(conn: AsyncConnection, task_id: int) -> Formation:
    """Elect rank 0 among the members, renumber ranks, start a new generation and mark the task running."""
    rows = (
        await conn.execute(
            select(task_assignments.c.id, task_assignments.c.client_id, task_assignments.c.rank,
                   clients.c.gpu_info, clients.c.cpu_info)
            .select_from(task_assignments.join(clients, clients.c.id == task_assignments.c.client_id))
            .where(task_assignments.c.task_id == task_id)
        )
    ).all()
    members = [Member(r.client_id, r.rank, gpu_memory_of(r.gpu_info), cpu_cores_of(r.cpu_info)) for r in rows]
    order = elect(members)
    ids = {r.client_id: r.id for r in rows}
    before = {r.client_id: r.rank for r in rows}
    # Only rows whose rank changes are touched: rewriting a unique key to the same value still deletes and
    # re-inserts its index entry, and on InnoDB those gap locks deadlock concurrent formations.
    moved = [member for member in order if before[member.client_id] != member.rank]
    if moved:
        # Two steps keep (task_id, rank) unique at every moment: first to negative ranks, then to the new ones.
        await conn.execute(
            update(task_assignments).where(task_assignments.c.id.in_([ids[m.client_id] for m in moved]))
            .values(rank=-1 - task_assignments.c.rank)
        )
    for member in moved:
        await conn.execute(update(task_assignments).where(task_assignments.c.id == ids[member.client_id]).values(rank=member.rank))
    coordinator = order[0].client_id
    now = dialect.now(conn)
    await conn.execute(update(tasks).where(tasks.c.id == task_id).values(status="running", client_id=coordinator, updated_at=now))
    generation = await _bump_generation(conn, task_id, coordinator_id=coordinator, formed=True)
    return Formation(task_id, generation, coordinator, {m.client_id: m.rank for m in order})


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
    await conn.execute(dialect.upsert(conn, task_runs, insert_values, values))
    return int((await conn.execute(select(task_runs.c.generation).where(task_runs.c.task_id == task_id))).scalar_one())


async def get_run(conn: AsyncConnection, task_id: int) -> dict[str, Any] | None:
    """The task's run row (generation, failures, coordinator, rendezvous), or None before its first claim."""
    row = (await conn.execute(select(task_runs).where(task_runs.c.task_id == task_id))).first()
    return row_dict(row) if row else None


async def _lock_run(conn: AsyncConnection, task_id: int) -> dict[str, Any] | None:
    row = (await conn.execute(select(task_runs).where(task_runs.c.task_id == task_id).with_for_update())).first()
    return row_dict(row) if row else None


async def check_fence(conn: AsyncConnection, task_id: int, generation: int, coordinator_id: str | None = None) -> None:
    """Lock the run row and raise Fenced unless the generation (and coordinator, if given) are current."""
    run = await _lock_run(conn, task_id)
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


async def end_attempt(conn: AsyncConnection, task_id: int, generation: int, reason: str, *, failure: bool,
                      max_attempts: int, final_status: str | None = None) -> str | None:
    """End the attempt of this generation: free the ranks, fence it, and re-queue or fail the task.

    Returns the task's new status, or None when that generation had already ended (someone else did it).
    """
    run = await _lock_run(conn, task_id)
    if run is None or run["generation"] != generation:
        return None
    task = (await conn.execute(select(tasks.c.status, tasks.c.error_log).where(tasks.c.id == task_id))).first()
    if task is None or task.status not in OPEN_TASK_STATUSES:
        return None  # completing (or failing) a task does not bump the generation: its attempt is over already
    failures = run["failures"] + (1 if failure else 0)
    status = final_status or (after_failure(failures, max_attempts) if failure else "pending")
    note = f"attempt {generation} ended: {reason}"
    if status == "failed" and failure:
        note += f"; {failures} failed attempt(s), the limit is {max_attempts}"
    await conn.execute(delete(task_assignments).where(task_assignments.c.task_id == task_id))
    await conn.execute(
        update(tasks).where(tasks.c.id == task_id).values(
            status=status, client_id=None, updated_at=dialect.now(conn), error_log=_append_log(task.error_log, note)
        )
    )
    await _bump_generation(conn, task_id, coordinator_id=None, formed=False, add_failure=1 if failure else 0)
    return status


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


async def cancel(conn: AsyncConnection, task_id: int) -> str:
    """Cancel a pending or running task: it ends as failed with error_log saying so; ranks are freed."""
    task = (await conn.execute(select(tasks.c.status).where(tasks.c.id == task_id).with_for_update())).first()
    if task is None:
        raise NotFound(f"task {task_id} does not exist")
    if task.status not in OPEN_TASK_STATUSES:
        raise Conflict(f"task {task_id} is {task.status}; only pending or running tasks can be cancelled")
    run = await _lock_run(conn, task_id)
    if run is not None:
        ended = await end_attempt(conn, task_id, run["generation"], "cancelled by the user", failure=False,
                                  max_attempts=1, final_status="failed")
        if ended:
            return ended
    await conn.execute(delete(task_assignments).where(task_assignments.c.task_id == task_id))
    await conn.execute(update(tasks).where(tasks.c.id == task_id).values(
        status="failed", client_id=None, updated_at=dialect.now(conn),
        error_log=_append_log(None, "cancelled by the user")))
    return "failed"


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


async def mark_error(conn: AsyncConnection, task_id: int, generation: int, reason: str) -> bool:
    """End the attempt as `error`: something retrying cannot fix (a config the recipe rejects)."""
    return await end_attempt(conn, task_id, generation, reason, failure=True, max_attempts=1,
                             final_status="error") is not None


async def active_capacities(conn: AsyncConnection) -> list[Capacity]:
    """The capacity of every active client (hardware as registered), for explaining why a task waits."""
    rows = (await conn.execute(select(clients.c.gpu_info, clients.c.cpu_info, clients.c.ram_info)
                               .where(clients.c.status == "active"))).all()
    return [Capacity(gpu_memory_of(r.gpu_info), cpu_cores_of(r.cpu_info), ram_of(r.ram_info)) for r in rows]

