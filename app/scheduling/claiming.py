"""Claiming, forming and ending attempts: each reads with app/db/queries/claims.py, decides with the pure functions of
app/scheduling/decide.py, and writes the decision back, all inside the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from app.db.queries import claims as claim_queries
from app.errors import Conflict, NotFound
from app.scheduling.decide import (
    Capacity,
    Member,
    Recipes,
    after_failure,
    cpu_cores_of,
    elect,
    gpu_memory_of,
    lowest_free_rank,
    ram_of,
)
from app.statuses import OPEN_TASK_STATUSES


@dataclass(frozen=True)
class GroupMember:
    """One member of a formed group: its rank and where it can be reached."""

    client_id: str
    rank: int
    hostname: str
    addresses: tuple[tuple[str, int], ...]  # (ip, prefix) as the client registered them


@dataclass(frozen=True)
class Formation:
    """The elected group of one attempt (generation) of a task."""

    task_id: int
    generation: int
    coordinator_id: str
    n_clients: int
    members: tuple[GroupMember, ...]
    every_member_has_a_gpu: bool

    @property
    def ranks(self) -> dict[str, int]:
        """Each member's rank."""
        return {m.client_id: m.rank for m in self.members}

    def member(self, client_id: str) -> GroupMember:
        """One member by client id."""
        return next(m for m in self.members if m.client_id == client_id)


@dataclass(frozen=True)
class Claim:
    """A rank this client took; `formation` is set when the group formed with it."""

    task_id: int
    rank: int
    n_clients: int
    formation: Formation | None

    @property
    def formed(self) -> bool:
        """True when this claim completed the group."""
        return self.formation is not None

    @property
    def generation(self) -> int | None:
        """The new generation when the group formed."""
        return self.formation.generation if self.formation else None


def _addresses(session: Any) -> tuple[tuple[str, int], ...]:
    found = session.get("addresses", []) if isinstance(session, dict) else []
    return tuple((str(a["ip"]), int(a.get("prefix") or 32)) for a in found if isinstance(a, dict) and a.get("ip"))


def _formation(task_id: int, generation: int, rows: Sequence[dict[str, Any]]) -> Formation:
    members = tuple(GroupMember(r["client_id"], r["rank"], r["hostname"] or "", _addresses(r["session_info"]))
                    for r in sorted(rows, key=lambda r: r["rank"]))
    coordinator = members[0].client_id if members else ""
    has_gpus = bool(rows) and all(gpu_memory_of(r["gpu_info"]) > 0 for r in rows)
    return Formation(task_id, generation, coordinator, len(members), members, has_gpus)


async def claim_next(conn: AsyncConnection, client_id: str, capacity: Capacity, *,
                     skip_task_ids: Sequence[int] = (), recipes: Recipes | None = None) -> Claim | None:
    """Take the lowest free rank of the best pending task this machine can run; form the group if it is now full."""
    found = await claim_queries.next_pending(conn, capacity, skip_task_ids=skip_task_ids, recipes=recipes)
    if found is None:
        return None
    task_id, n_clients = found
    if n_clients == 1:
        return await _claim_single(conn, task_id, client_id)
    holders = await claim_queries.rank_holders(conn, task_id)
    if client_id in holders:
        return None  # one rank per client per task: the schema allows several, the election does not
    rank = lowest_free_rank(holders.values(), n_clients)
    if rank is None:
        return None
    full = len(holders) + 1 >= n_clients
    await claim_queries.add_rank(conn, task_id, client_id, rank, touch=not full)
    if not full:
        return Claim(task_id, rank, n_clients, None)
    formation = await form_group(conn, task_id)
    return Claim(task_id, formation.ranks[client_id], n_clients, formation)


async def _claim_single(conn: AsyncConnection, task_id: int, client_id: str) -> Claim:
    """A task for one machine: rank 0, the group formed at once, no election (the unique key refuses a second taker)."""
    await claim_queries.add_rank(conn, task_id, client_id, 0, touch=False)
    generation = await claim_queries.start_generation(conn, task_id, client_id)
    me = GroupMember(client_id, 0, "", ())  # a group of one meets no one: its addresses are not needed
    return Claim(task_id, 0, 1, Formation(task_id, generation, client_id, 1, (me,), False))


async def form_group(conn: AsyncConnection, task_id: int) -> Formation:
    """Elect rank 0 among the members, renumber ranks, start a new generation and mark the task running."""
    rows = await claim_queries.group_rows(conn, task_id)
    order = elect([Member(r["client_id"], r["rank"], gpu_memory_of(r["gpu_info"]), cpu_cores_of(r["cpu_info"]))
                   for r in rows])
    new_rank = {m.client_id: m.rank for m in order}
    await claim_queries.renumber(conn, {r["id"]: new_rank[r["client_id"]] for r in rows
                                        if r["rank"] != new_rank[r["client_id"]]})
    generation = await claim_queries.start_generation(conn, task_id, order[0].client_id)
    return _formation(task_id, generation, [{**r, "rank": new_rank[r["client_id"]]} for r in rows])


async def formation_of(conn: AsyncConnection, task_id: int) -> Formation | None:
    """The current group of a running task, for a member that joined before it formed."""
    run = await claim_queries.get_run(conn, task_id)
    rows = await claim_queries.group_rows(conn, task_id)
    if run is None or not rows:
        return None
    return _formation(task_id, int(run["generation"]), rows)


async def end_attempt(conn: AsyncConnection, task_id: int, generation: int, reason: str, *, failure: bool,
                      max_attempts: int, final_status: str | None = None) -> str | None:
    """End the attempt of this generation: free the ranks, fence it, and re-queue or fail the task.

    Returns the task's new status, or None when that generation had already ended (someone else did it).
    """
    state = await claim_queries.lock_attempt(conn, task_id)
    if state is None or state.generation != generation:
        return None
    if state.task_status not in OPEN_TASK_STATUSES:
        return None  # completing (or failing) a task does not bump the generation: its attempt is over already
    failures = state.failures + (1 if failure else 0)
    status = final_status or (after_failure(failures, max_attempts) if failure else "pending")
    note = f"attempt {generation} ended: {reason}"
    if status == "failed" and failure:
        note += f"; {failures} failed attempt(s), the limit is {max_attempts}"
    await claim_queries.close_attempt(conn, task_id, status, note, state.error_log, failure=failure)
    return status


async def mark_error(conn: AsyncConnection, task_id: int, generation: int, reason: str) -> bool:
    """End the attempt as `error`: something retrying cannot fix (a config the recipe rejects)."""
    return await end_attempt(conn, task_id, generation, reason, failure=True, max_attempts=1,
                             final_status="error") is not None


async def cancel(conn: AsyncConnection, task_id: int) -> str:
    """Cancel a pending or running task: it ends as failed with error_log saying so; ranks are freed."""
    status = await claim_queries.lock_task_status(conn, task_id)
    if status is None:
        raise NotFound(f"task {task_id} does not exist")
    if status not in OPEN_TASK_STATUSES:
        raise Conflict(f"task {task_id} is {status}; only pending or running tasks can be cancelled")
    state = await claim_queries.lock_attempt(conn, task_id)
    if state is not None:
        ended = await end_attempt(conn, task_id, state.generation, "cancelled by the user", failure=False,
                                  max_attempts=1, final_status="failed")
        if ended:
            return ended
    await claim_queries.fail_unformed(conn, task_id, "cancelled by the user")
    return "failed"


async def active_capacities(conn: AsyncConnection) -> list[Capacity]:
    """The capacity of every active client (hardware as registered), for explaining why a task waits."""
    return [Capacity(gpu_memory_of(r["gpu_info"]), cpu_cores_of(r["cpu_info"]), ram_of(r["ram_info"]))
            for r in await claim_queries.active_hardware(conn)]
