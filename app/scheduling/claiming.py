"""Claiming, forming and ending attempts: each reads with app/db/queries/claims.py, decides with the pure functions of
app/scheduling/decide.py, and writes the decision back, all inside the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncConnection

from app.db.queries import claims as claim_queries
from app.db.queries import logs as log_queries
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
    ranks_after_departure,
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
    n_clients: int  # the current size: the number of members
    members: tuple[GroupMember, ...]
    every_member_has_a_gpu: bool
    min_clients: int = 0  # the smallest size the group may train at (0: its current size)
    max_clients: int = 0  # the largest size it may grow to, the task's n_clients (0: its current size)

    def __post_init__(self) -> None:
        if self.min_clients <= 0:
            object.__setattr__(self, "min_clients", self.n_clients)
        if self.max_clients <= 0:
            object.__setattr__(self, "max_clients", max(self.n_clients, self.min_clients))

    @property
    def elastic(self) -> bool:
        """True when members may leave and join while the group trains."""
        return self.min_clients < self.max_clients

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


@dataclass(frozen=True)
class Left:
    """What members leaving a group did: "shrunk" (the survivors' new formation), "ended" (the task's new status, as
    end_attempt leaves it) or "stale" (that generation is no longer current: nothing was written)."""

    kind: Literal["shrunk", "ended", "stale"]
    formation: Formation | None = None
    status: str | None = None


def _addresses(session: Any) -> tuple[tuple[str, int], ...]:
    found = session.get("addresses", []) if isinstance(session, dict) else []
    return tuple((str(a["ip"]), int(a.get("prefix") or 32)) for a in found if isinstance(a, dict) and a.get("ip"))


def _formation(task_id: int, generation: int, rows: Sequence[dict[str, Any]],
               sizes: tuple[int, int] = (0, 0)) -> Formation:
    members = tuple(GroupMember(r["client_id"], r["rank"], r["hostname"] or "", _addresses(r["session_info"]))
                    for r in sorted(rows, key=lambda r: r["rank"]))
    coordinator = members[0].client_id if members else ""
    has_gpus = bool(rows) and all(gpu_memory_of(r["gpu_info"]) > 0 for r in rows)
    return Formation(task_id, generation, coordinator, len(members), members, has_gpus, *sizes)


def _membership_note(formation: Formation) -> str:
    return (f"{formation.n_clients} of {formation.min_clients}..{formation.max_clients} members, "
            f"generation {formation.generation}")


async def claim_next(conn: AsyncConnection, client_id: str, capacity: Capacity, *,
                     skip_task_ids: Sequence[int] = (), recipes: Recipes | None = None) -> Claim | None:
    """Take the lowest free rank of the best pending task this machine can run and form the group if it is now full;
    with no pending task, join a running elastic group that has room."""
    found = await claim_queries.next_pending(conn, capacity, skip_task_ids=skip_task_ids, recipes=recipes)
    if found is None:
        joinable = await claim_queries.next_joinable(conn, client_id, capacity, skip_task_ids=skip_task_ids,
                                                     recipes=recipes)
        return await admit(conn, joinable.task_id, client_id) if joinable is not None else None
    task_id, n_clients = found.task_id, found.n_clients
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
    sizes = await claim_queries.group_sizes(conn, task_id)
    return _formation(task_id, generation, [{**r, "rank": new_rank[r["client_id"]]} for r in rows], sizes)


async def form_if_settled(conn: AsyncConnection, task_id: int, settle_seconds: float) -> Formation | None:
    """Form a pending elastic task's group once min_clients hold ranks and none was claimed for `settle_seconds`;
    None when it is not time (or not this task's way: a fixed-size group forms when it is full)."""
    smallest, largest = await claim_queries.group_sizes(conn, task_id)
    if smallest >= largest:
        return None  # read without a lock: a fixed group's holders never hold up a claimer of its row
    locked = await claim_queries.lock_task(conn, task_id)
    if locked is None:
        return None
    status, sizes = locked
    if status != "pending" or sizes.min_clients >= sizes.n_clients:
        return None
    holders = await claim_queries.rank_holders(conn, task_id)
    if len(holders) < sizes.min_clients or await claim_queries.claimed_within(conn, task_id, settle_seconds):
        return None
    return await form_group(conn, task_id)


async def admit(conn: AsyncConnection, task_id: int, client_id: str) -> Claim | None:
    """Add this client to a running elastic group with room: the next rank, a new generation under the same rank 0;
    the claim's formation is set (the newcomer starts at once). None when it cannot join."""
    locked = await claim_queries.lock_task(conn, task_id)
    if locked is None:
        return None
    status, sizes = locked
    if status != "running" or sizes.min_clients >= sizes.n_clients:
        return None
    holders = await claim_queries.rank_holders(conn, task_id)
    rank = lowest_free_rank(holders.values(), sizes.n_clients)
    if not holders or client_id in holders or rank is None:
        return None
    coordinator = min(holders, key=lambda c: holders[c])
    await claim_queries.add_rank(conn, task_id, client_id, rank, touch=False)
    generation = await claim_queries.start_generation(conn, task_id, coordinator)
    formation = _formation(task_id, generation, await claim_queries.group_rows(conn, task_id),
                           (sizes.min_clients, sizes.n_clients))
    await log_queries.add_task_log(conn, task_id, client_id, "info",
                                   f"membership: {client_id} joined; {_membership_note(formation)}")
    return Claim(task_id, rank, sizes.n_clients, formation)


async def leave(conn: AsyncConnection, task_id: int, generation: int, client_ids: Sequence[str], reason: str, *,
                failure: bool = False, max_attempts: int | None = None, by: str | None = None) -> Left:
    """Members leave the group of this generation. An elastic group that keeps min_clients shrinks: their ranks are
    freed, the survivors renumbered densely in their order, and a new generation starts under the new rank 0, with
    no failure counted. Otherwise the attempt ends exactly as end_attempt ends it (`failure`, `max_attempts`).
    `by` writes the task log line (default: the first leaving client)."""
    if failure and max_attempts is None:
        raise ValueError("a departure counted as a failure needs max_attempts")
    locked = await claim_queries.lock_task(conn, task_id)
    if locked is None:
        return Left("stale")
    status, sizes = locked
    if sizes.min_clients >= sizes.n_clients:
        return await _end(conn, task_id, generation, reason, failure, max_attempts)
    state = await claim_queries.lock_attempt(conn, task_id)
    if state is None or state.generation != generation or status != "running":
        return Left("stale")
    rows = await claim_queries.group_rows(conn, task_id)
    ranks = {r["client_id"]: r["rank"] for r in rows}
    leaving = [c for c in dict.fromkeys(client_ids) if c in ranks]
    if not leaving:
        return Left("stale")
    survivors = ranks_after_departure(ranks, leaving)
    if len(survivors) < sizes.min_clients:
        return await _end(conn, task_id, generation, reason, failure, max_attempts)
    await claim_queries.remove_ranks(conn, task_id, leaving)
    await claim_queries.renumber(conn, {r["id"]: survivors[r["client_id"]] for r in rows
                                        if r["client_id"] in survivors and r["rank"] != survivors[r["client_id"]]})
    coordinator = next(c for c, rank in survivors.items() if rank == 0)
    new_generation = await claim_queries.start_generation(conn, task_id, coordinator)
    formation = _formation(task_id, new_generation,
                           [{**r, "rank": survivors[r["client_id"]]} for r in rows if r["client_id"] in survivors],
                           (sizes.min_clients, sizes.n_clients))
    await log_queries.add_task_log(conn, task_id, by or leaving[0], "warning" if failure else "info",
                                   f"membership: {', '.join(leaving)} left ({reason}); {_membership_note(formation)}")
    return Left("shrunk", formation=formation)


async def _end(conn: AsyncConnection, task_id: int, generation: int, reason: str, failure: bool,
               max_attempts: int | None) -> Left:
    status = await end_attempt(conn, task_id, generation, reason, failure=failure, max_attempts=max_attempts or 1)
    return Left("ended", status=status) if status else Left("stale")


async def formation_of(conn: AsyncConnection, task_id: int) -> Formation | None:
    """The current group of a running task, for a member that joined before it formed."""
    run = await claim_queries.get_run(conn, task_id)
    rows = await claim_queries.group_rows(conn, task_id)
    if run is None or not rows:
        return None
    return _formation(task_id, int(run["generation"]), rows, await claim_queries.group_sizes(conn, task_id))


async def end_attempt(conn: AsyncConnection, task_id: int, generation: int, reason: str, *, failure: bool,
                      max_attempts: int, final_status: str | None = None) -> str | None:
    """End the attempt of this generation: free the ranks, fence it, and re-queue or fail the task.

    Returns the task's new status, or None when that generation had already ended (someone else did it).
    """
    # The task row before the run row, the order claims, admissions and departures lock them in: two
    # transactions never hold one each while waiting for the other.
    await claim_queries.lock_task_status(conn, task_id)
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
