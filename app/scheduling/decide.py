"""Pure "decide the next step" functions over database state: no I/O, unit-tested on their own."""

from __future__ import annotations

import ipaddress
import math
import sys
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any


@dataclass(frozen=True)
class Capacity:
    """What a client offers to the farm, after its volunteer's limits."""

    gpu_memory_mb: int
    cpu_cores: int
    ram_mb: int


@dataclass(frozen=True)
class Recipes:
    """The model and dataset recipes installed on a client: it claims only tasks that name both."""

    models: frozenset[str]
    datasets: frozenset[str]
    bundles: frozenset[str] = frozenset()  # NAME==VERSION of the bundles installed and runnable here


@dataclass(frozen=True)
class Member:
    """A client that holds a rank of a task."""

    client_id: str
    rank: int
    gpu_memory_mb: int
    cpu_cores: int


def _count(value: Any) -> int:
    """A non-negative whole number from a stored JSON value; 0 for anything malformed (never raises)."""
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return 0
    return max(number, 0)


def gpu_memory_of(gpu_info: Any) -> int:
    """The largest GPU memory (MB) in a clients.gpu_info list; 0 without GPUs."""
    if not isinstance(gpu_info, list):
        return 0
    sizes = [_count(gpu.get("memory_total_mb")) for gpu in gpu_info if isinstance(gpu, dict)]
    return max(sizes, default=0)


def cpu_cores_of(cpu_info: Any) -> int:
    """Logical cores from clients.cpu_info."""
    if isinstance(cpu_info, dict):
        return _count(cpu_info.get("logical_cores")) or _count(cpu_info.get("physical_cores")) or 1
    return 1


def ram_of(ram_info: Any) -> int:
    """Total RAM (MB) from clients.ram_info."""
    return _count(ram_info.get("total_mb")) if isinstance(ram_info, dict) else 0


def elect(members: Sequence[Member]) -> list[Member]:
    """The new rank order: most GPU memory first, then most CPU cores, then client id (deterministic)."""
    ordered = sorted(members, key=lambda m: (-m.gpu_memory_mb, -m.cpu_cores, m.client_id))
    return [Member(m.client_id, rank, m.gpu_memory_mb, m.cpu_cores) for rank, m in enumerate(ordered)]


def lowest_free_rank(taken: Iterable[int], n_clients: int) -> int | None:
    """The smallest rank in 0..n_clients-1 nobody holds, or None when the group is full."""
    held = set(taken)
    return next((rank for rank in range(n_clients) if rank not in held), None)


def meets(requirements: dict[str, Any], capacity: Capacity) -> list[str]:
    """The requirements this capacity does not meet (empty when it may run the task)."""
    problems = []
    for key, have in (("min_gpu_memory", capacity.gpu_memory_mb), ("min_cpu_cores", capacity.cpu_cores),
                      ("min_ram", capacity.ram_mb)):
        need = int(requirements.get(key) or 0)
        if need > have:
            problems.append(f"{key}={need}")
    return problems


def explain_pending(requirements: dict[str, Any], capacities: Sequence[Capacity], n_clients: int = 1) -> str | None:
    """Why no active client can take this task, or None when enough clients could."""
    if not capacities:
        return "no active client"
    able = [c for c in capacities if not meets(requirements, c)]
    if len(able) >= n_clients:
        return None
    if able:
        return f"needs {n_clients} clients meeting its requirements, {len(able)} active client(s) do"
    largest = {
        "min_gpu_memory": max(c.gpu_memory_mb for c in capacities),
        "min_cpu_cores": max(c.cpu_cores for c in capacities),
        "min_ram": max(c.ram_mb for c in capacities),
    }
    unmet = [key for key in ("min_gpu_memory", "min_cpu_cores", "min_ram")
             if int(requirements.get(key) or 0) > largest[key]]
    if unmet:
        parts = [f"{key}={int(requirements[key])} (largest: {largest[key]})" for key in unmet]
        return "no active client meets " + ", ".join(parts)
    return "no single active client meets all of its requirements at once"


@dataclass(frozen=True)
class Departure:
    """A member that is gone from its group, and why."""

    client_id: str
    rank: int
    reason: str


def _why_gone(member: dict[str, Any], now: datetime, failure_timeout: timedelta) -> str | None:
    who = f"rank {member['rank']} ({member['client_id']})"
    if member["status"] == "failed":
        return f"{who} reported a failure"
    if member.get("client_status") != "active":
        return f"{who} stopped (client inactive)"
    last_seen = member.get("last_seen")
    if last_seen is None or now - last_seen > failure_timeout:
        age = "never" if last_seen is None else f"{(now - last_seen).total_seconds():.0f} s ago"
        return f"{who} stopped heartbeating (last seen {age})"
    return None


def dead_members(
    members: Sequence[dict[str, Any]], now: datetime, failure_timeout: timedelta
) -> list[Departure]:
    """Every member of a formed attempt that is gone (failed, inactive or silent), lowest rank first.

    Each member dict has client_id, rank, status (assignment), client_status and last_seen.
    """
    gone = [(m, _why_gone(m, now, failure_timeout)) for m in sorted(members, key=lambda m: m["rank"])]
    return [Departure(str(m["client_id"]), int(m["rank"]), why) for m, why in gone if why is not None]


def failure_reason(
    members: Sequence[dict[str, Any]], now: datetime, failure_timeout: timedelta
) -> str | None:
    """Why a formed attempt has failed, from its members' rows, or None while it is healthy.

    Each member dict has client_id, rank, status (assignment), client_status and last_seen.
    """
    dead = dead_members(members, now, failure_timeout)
    return dead[0].reason if dead else None


def n_clients_of(config: Any) -> int:
    """The largest size of a task's group: `n_clients` of a distributed config, else 1."""
    if isinstance(config, dict) and config.get("distributed") and _is_whole(config.get("n_clients")):
        return max(1, int(config["n_clients"]))
    return 1


def min_clients_of(config: Any) -> int:
    """The smallest size a task's group may train at: `min_clients` when it is 1..n_clients, else n_clients."""
    largest = n_clients_of(config)
    smallest = config.get("min_clients") if isinstance(config, dict) else None
    if isinstance(smallest, int) and not isinstance(smallest, bool) and 1 <= smallest <= largest:
        return smallest
    return largest


def is_elastic(config: Any) -> bool:
    """True when the task's group may train below its full size (min_clients < n_clients)."""
    return min_clients_of(config) < n_clients_of(config)


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def ranks_after_departure(ranks: Mapping[str, int], leaving: Collection[str]) -> dict[str, int]:
    """The survivors' new dense ranks 0..k-1, in their old order (rank 0 stays 0 while it stays)."""
    survivors = sorted((rank, client_id) for client_id, rank in ranks.items() if client_id not in leaving)
    return {client_id: new for new, (_, client_id) in enumerate(survivors)}


def after_failure(failures: int, max_attempts: int) -> str:
    """The status of a task whose attempt just failed: back to the queue, or failed for good."""
    return "failed" if failures >= max_attempts else "pending"


def choose_rendezvous_host(own: Sequence[dict[str, Any]], others: Sequence[Sequence[dict[str, Any]]],
                           same_host: bool) -> str:
    """The coordinator address every other member can reach: loopback on one host, else a shared subnet's."""
    if same_host:
        return "127.0.0.1"
    own_v4 = [a for a in own if ":" not in str(a.get("ip", "")) and not str(a.get("ip", "")).startswith("127.")]
    for address in own_v4:
        network = ipaddress.ip_interface(f"{address['ip']}/{address.get('prefix', 32)}").network
        if all(any(ipaddress.ip_address(o["ip"]) in network for o in member if ":" not in str(o.get("ip", "")))
               for member in others):
            return str(address["ip"])
    return str(own_v4[0]["ip"]) if own_v4 else "127.0.0.1"


def choose_backend(every_rank_has_a_gpu: bool, platform: str = sys.platform) -> str:
    """The process group's backend: NCCL when every rank has a GPU, except on Windows (no NCCL there); gloo otherwise."""
    return "nccl" if every_rank_has_a_gpu and platform != "win32" else "gloo"


DDP_SHARE_LIMIT = 0.20  # DDP while one step's all-reduce takes under this share of a measured step
DILOCO_SHARE_TARGET = 0.10  # DiLoCo's H keeps one outer step's exchange under this share of H inner steps
MAX_INNER_STEPS = 10_000
PAYLOAD_BYTES_PER_VALUE = {"none": 4.0, "fp16": 2.0, "int8": 1.0 + 4.0 / 256}


@dataclass(frozen=True)
class Link:
    """The slowest measured link among a group's members."""

    mbit_per_s: float
    latency_s: float


@dataclass(frozen=True)
class SyncChoice:
    """How a group synchronises, and why."""

    mode: str  # "ddp" or "diloco"
    inner_steps: int
    compression: str
    reason: str

    def describe(self) -> str:
        """One line for the task log and page: 'diloco, H=100, fp16: <reason>'."""
        head = "ddp" if self.mode == "ddp" else f"diloco, H={self.inner_steps}, {self.compression}"
        return f"{head}: {self.reason}"


def _exchange_seconds(values_bytes: float, world: int, link: Link, gather: bool) -> float:
    """Seconds to average a payload over the link: a ring all-reduce, or an all-gather of compressed payloads."""
    rounds = world - 1 if gather else 2 * (world - 1)
    sent = values_bytes * (world - 1) if gather else values_bytes * 2 * (world - 1) / world
    return rounds * link.latency_s + sent * 8 / (link.mbit_per_s * 1e6)


def slowest_link(measured: Sequence[tuple[float, float]]) -> Link | None:
    """The slowest of the measured (Mbit/s, latency ms) links, with the longest latency among them; None if none."""
    if not measured:
        return None
    return Link(min(m for m, _ in measured), max(ms for _, ms in measured) / 1000)


def choose_sync(config: dict[str, Any], parameters: int, world: int, step_seconds: float,
                link: Link | None) -> SyncChoice:
    """The task's sync mode; for "auto", DDP when a step's all-reduce over the slowest link takes under 20% of a
    measured step, DiLoCo otherwise with the smallest H that keeps its exchange under 10% of the compute."""
    sync = str(config.get("sync") or "auto")
    inner = int(config.get("inner_steps") or 100)
    compression = str(config.get("compression") or "none")
    if world <= 1:
        return SyncChoice("ddp", inner, compression, "one member: nothing to exchange")
    if sync in ("ddp", "diloco"):
        return SyncChoice(sync, inner, compression, "set by the task")
    if link is None or link.mbit_per_s <= 0:
        return SyncChoice("ddp", inner, compression, "no measured link between the members")
    ddp = _exchange_seconds(parameters * 4.0, world, link, gather=False)
    share = ddp / (ddp + step_seconds) if ddp + step_seconds > 0 else 0.0
    said = f"slowest link {link.mbit_per_s:.0f} Mbit/s, DDP would spend {share:.0%} of each step communicating"
    if ddp < DDP_SHARE_LIMIT * step_seconds:
        return SyncChoice("ddp", inner, compression, said)
    outer = _exchange_seconds(parameters * PAYLOAD_BYTES_PER_VALUE.get(compression, 4.0), world, link,
                              gather=compression != "none")
    needed = outer / (DILOCO_SHARE_TARGET * step_seconds) if step_seconds > 0 else MAX_INNER_STEPS
    return SyncChoice("diloco", max(1, min(MAX_INNER_STEPS, math.ceil(needed))), compression, said)
