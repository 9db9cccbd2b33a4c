"""The pure scheduling decisions (app.scheduling.decide) and parse_interval: no database, no processes."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from app.scheduling.decide import (
    Capacity,
    Departure,
    Member,
    after_failure,
    choose_rendezvous_host,
    cpu_cores_of,
    dead_members,
    elect,
    explain_pending,
    failure_reason,
    gpu_memory_of,
    is_elastic,
    lowest_free_rank,
    meets,
    min_clients_of,
    n_clients_of,
    ram_of,
    ranks_after_departure,
)
from app.scheduling.validation import parse_interval

NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
TIMEOUT = timedelta(seconds=30)

# --- elect --------------------------------------------------------------------------------------------------------

MEMBERS = [
    Member("c-small-gpu", 3, 4096, 64),
    Member("b-big-gpu-few-cores", 2, 24576, 8),
    Member("a-big-gpu-many-cores", 1, 24576, 32),
    Member("d-big-gpu-many-cores", 0, 24576, 32),
]
ELECTED = ["a-big-gpu-many-cores", "d-big-gpu-many-cores", "b-big-gpu-few-cores", "c-small-gpu"]


@pytest.mark.parametrize("order", list(itertools.permutations(range(len(MEMBERS)))))
def test_elect_is_deterministic_for_every_input_order(order: tuple[int, ...]) -> None:
    """GPU memory first, then CPU cores, then client id, whatever order the members come in; ranks are 0..n-1."""
    elected = elect([MEMBERS[i] for i in order])
    assert [m.client_id for m in elected] == ELECTED
    assert [m.rank for m in elected] == [0, 1, 2, 3]
    by_id = {m.client_id: m for m in MEMBERS}
    for member in elected:
        assert (member.gpu_memory_mb, member.cpu_cores) == (by_id[member.client_id].gpu_memory_mb,
                                                            by_id[member.client_id].cpu_cores)


def test_elect_cpu_only_members_order_by_cores() -> None:
    """Without GPUs the member with most cores becomes rank 0."""
    elected = elect([Member("x", 0, 0, 4), Member("y", 1, 0, 16)])
    assert [(m.client_id, m.rank) for m in elected] == [("y", 0), ("x", 1)]
    assert elect([]) == []


# --- lowest_free_rank ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("taken, n_clients, expected", [
    ([], 3, 0),
    ([0], 3, 1),
    ([1, 0], 3, 2),
    ([0, 2], 3, 1),
    ({2, 1}, 3, 0),
    ([0, 1, 2], 3, None),
    ([0], 1, None),
    ([], 0, None),
    ([5, 7], 3, 0),
])
def test_lowest_free_rank(taken: Any, n_clients: int, expected: int | None) -> None:
    """The smallest rank nobody holds, None when the group is full."""
    assert lowest_free_rank(taken, n_clients) == expected


def test_lowest_free_rank_accepts_a_generator() -> None:
    """Any iterable of taken ranks works (consumed once)."""
    assert lowest_free_rank((r for r in [0, 1]), 4) == 2


# --- meets --------------------------------------------------------------------------------------------------------


def test_meets_lists_each_unmet_requirement() -> None:
    """Empty when everything is met (bounds inclusive); each shortfall named as key=need otherwise."""
    capacity = Capacity(gpu_memory_mb=8192, cpu_cores=8, ram_mb=16384)
    assert meets({}, capacity) == []
    assert meets({"min_gpu_memory": 8192, "min_cpu_cores": 8, "min_ram": 16384}, capacity) == []
    assert meets({"min_gpu_memory": None, "min_cpu_cores": 0}, capacity) == []
    assert meets({"min_gpu_memory": 8193}, capacity) == ["min_gpu_memory=8193"]
    assert meets({"min_gpu_memory": 10000, "min_cpu_cores": 9, "min_ram": 32768}, capacity) == [
        "min_gpu_memory=10000", "min_cpu_cores=9", "min_ram=32768"]


# --- explain_pending ----------------------------------------------------------------------------------------------

SMALL = Capacity(4096, 4, 8192)
BIG = Capacity(16384, 16, 65536)


def test_explain_pending_without_clients() -> None:
    """No active client at all."""
    assert explain_pending({}, []) == "no active client"
    assert explain_pending({"min_gpu_memory": 1}, [], n_clients=3) == "no active client"


def test_explain_pending_names_the_unmet_requirement_and_the_largest() -> None:
    """One requirement above every client: named with the largest value available."""
    assert explain_pending({"min_gpu_memory": 8192}, [SMALL, Capacity(2048, 32, 1024)]) == (
        "no active client meets min_gpu_memory=8192 (largest: 4096)")


def test_explain_pending_lists_several_unmet_requirements() -> None:
    """Every requirement above the largest client is listed, in a fixed order."""
    reason = explain_pending({"min_gpu_memory": 32768, "min_cpu_cores": 64, "min_ram": 1024}, [SMALL, BIG])
    assert reason == "no active client meets min_gpu_memory=32768 (largest: 16384), min_cpu_cores=64 (largest: 16)"
    reason = explain_pending({"min_gpu_memory": 32768, "min_cpu_cores": 64, "min_ram": 10**6}, [SMALL])
    assert reason == ("no active client meets min_gpu_memory=32768 (largest: 4096), min_cpu_cores=64 (largest: 4), "
                      "min_ram=1000000 (largest: 8192)")


def test_explain_pending_when_no_single_client_has_everything() -> None:
    """Each requirement is met by some client, but never all by the same one."""
    reason = explain_pending({"min_gpu_memory": 8192, "min_cpu_cores": 8},
                             [Capacity(16384, 2, 1024), Capacity(0, 32, 1024)])
    assert reason == "no single active client meets all of its requirements at once"


def test_explain_pending_enough_individually_but_not_n_clients() -> None:
    """Some clients qualify, fewer than the task's n_clients."""
    reason = explain_pending({"min_gpu_memory": 8192}, [BIG, BIG, SMALL], n_clients=3)
    assert reason == "needs 3 clients meeting its requirements, 2 active client(s) do"


@pytest.mark.parametrize("requirements, capacities, n_clients", [
    ({}, [SMALL], 1),
    ({"min_gpu_memory": 4096, "min_cpu_cores": 4, "min_ram": 8192}, [SMALL], 1),
    ({"min_gpu_memory": 8192}, [BIG, SMALL, BIG], 2),
    ({"min_gpu_memory": 0}, [SMALL, SMALL, SMALL, SMALL], 4),
])
def test_explain_pending_is_none_when_satisfiable(requirements: dict[str, Any], capacities: list[Capacity],
                                                  n_clients: int) -> None:
    """None whenever at least n_clients clients meet every requirement."""
    assert explain_pending(requirements, capacities, n_clients) is None


# --- failure_reason -----------------------------------------------------------------------------------------------


def member(rank: int, *, status: str = "training", client_status: str = "active",
           age: timedelta | None = timedelta(seconds=1)) -> dict[str, Any]:
    """An attempt member row: healthy unless told otherwise; age None means never seen."""
    return {"client_id": f"client-{rank}", "rank": rank, "status": status, "client_status": client_status,
            "last_seen": None if age is None else NOW - age}


def test_failure_reason_healthy_is_none() -> None:
    """Every member active, recently seen and not failed."""
    assert failure_reason([member(0), member(1, status="assigned"), member(2)], NOW, TIMEOUT) is None
    assert failure_reason([], NOW, TIMEOUT) is None


def test_failure_reason_reported_failure() -> None:
    """An assignment whose status is 'failed'."""
    assert failure_reason([member(0), member(1, status="failed")], NOW, TIMEOUT) == (
        "rank 1 (client-1) reported a failure")


def test_failure_reason_inactive_client() -> None:
    """A member whose client went inactive."""
    assert failure_reason([member(0, client_status="inactive"), member(1)], NOW, TIMEOUT) == (
        "rank 0 (client-0) stopped (client inactive)")


def test_failure_reason_heartbeat_timeout_and_its_boundary() -> None:
    """Seen longer ago than the timeout fails; exactly the timeout ago does not; never seen fails."""
    assert failure_reason([member(0), member(1, age=TIMEOUT)], NOW, TIMEOUT) is None
    assert failure_reason([member(0), member(1, age=TIMEOUT + timedelta(microseconds=1))], NOW, TIMEOUT) == (
        "rank 1 (client-1) stopped heartbeating (last seen 30 s ago)")
    assert failure_reason([member(0), member(1, age=timedelta(seconds=95))], NOW, TIMEOUT) == (
        "rank 1 (client-1) stopped heartbeating (last seen 95 s ago)")
    assert failure_reason([member(0, age=None)], NOW, TIMEOUT) == (
        "rank 0 (client-0) stopped heartbeating (last seen never)")


def test_failure_reason_reports_the_lowest_rank_first() -> None:
    """Several failed members, given out of order: the lowest rank's reason wins."""
    members = [member(3, status="failed"), member(2, age=timedelta(hours=1)), member(0), member(1, client_status="inactive")]
    assert failure_reason(members, NOW, TIMEOUT) == "rank 1 (client-1) stopped (client inactive)"


def test_dead_members_lists_every_gone_member_lowest_rank_first() -> None:
    """Every failed, inactive or silent member, with the same reason failure_reason gives, in rank order."""
    members = [member(3, status="failed"), member(2, age=timedelta(hours=1)), member(0), member(1, client_status="inactive")]
    assert dead_members(members, NOW, TIMEOUT) == [
        Departure("client-1", 1, "rank 1 (client-1) stopped (client inactive)"),
        Departure("client-2", 2, "rank 2 (client-2) stopped heartbeating (last seen 3600 s ago)"),
        Departure("client-3", 3, "rank 3 (client-3) reported a failure"),
    ]
    assert dead_members([member(0), member(1, age=TIMEOUT)], NOW, TIMEOUT) == []
    assert dead_members([], NOW, TIMEOUT) == []


# --- elastic sizes and departures ---------------------------------------------------------------------------------


@pytest.mark.parametrize("config, smallest, largest", [
    ({"distributed": True, "n_clients": 3, "min_clients": 2}, 2, 3),
    ({"distributed": True, "n_clients": 3, "min_clients": 1}, 1, 3),
    ({"distributed": True, "n_clients": 3, "min_clients": 3}, 3, 3),
    ({"distributed": True, "n_clients": 3}, 3, 3),  # a task stored before min_clients existed: a fixed group
    ({"distributed": True, "n_clients": 3, "min_clients": None}, 3, 3),
    ({"distributed": True, "n_clients": 3, "min_clients": 0}, 3, 3),  # malformed stored values never raise
    ({"distributed": True, "n_clients": 3, "min_clients": 4}, 3, 3),
    ({"distributed": True, "n_clients": 3, "min_clients": "2"}, 3, 3),
    ({"distributed": True, "n_clients": 3, "min_clients": True}, 3, 3),
    ({"distributed": False, "n_clients": 1, "min_clients": 1}, 1, 1),
    ({"distributed": False, "n_clients": 3, "min_clients": 2}, 1, 1),
    ({"distributed": True, "n_clients": True}, 1, 1),
    (None, 1, 1),
])
def test_min_and_n_clients_of_a_config(config: Any, smallest: int, largest: int) -> None:
    """min_clients is 1..n_clients when given and valid, else n_clients; n_clients is 1 unless distributed."""
    assert (min_clients_of(config), n_clients_of(config)) == (smallest, largest)
    assert is_elastic(config) == (smallest < largest)


@pytest.mark.parametrize("ranks, leaving, expected", [
    ({"a": 0, "b": 1, "c": 2}, {"b"}, {"a": 0, "c": 1}),
    ({"a": 0, "b": 1, "c": 2}, {"a"}, {"b": 0, "c": 1}),  # rank 0 left: the lowest surviving rank becomes 0
    ({"a": 0, "b": 1, "c": 2}, {"c"}, {"a": 0, "b": 1}),
    ({"a": 0, "b": 1, "c": 2, "d": 3}, {"a", "c"}, {"b": 0, "d": 1}),
    ({"d": 3, "a": 0, "c": 2, "b": 1}, {"b"}, {"a": 0, "c": 1, "d": 2}),  # the old order, not the given order
    ({"a": 0, "b": 1}, {"a", "b"}, {}),
    ({"a": 0, "b": 1}, {"x"}, {"a": 0, "b": 1}),
])
def test_ranks_after_departure_are_dense_in_the_old_order(ranks: dict[str, int], leaving: set[str],
                                                          expected: dict[str, int]) -> None:
    """Survivors keep their relative order and get ranks 0..k-1."""
    assert ranks_after_departure(ranks, leaving) == expected


# --- after_failure ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("failures, max_attempts, expected", [
    (1, 3, "pending"),
    (2, 3, "pending"),
    (3, 3, "failed"),
    (4, 3, "failed"),
    (1, 1, "failed"),
])
def test_after_failure(failures: int, max_attempts: int, expected: str) -> None:
    """Back to the queue until the failures reach max_attempts, then failed for good."""
    assert after_failure(failures, max_attempts) == expected


# --- choose_rendezvous_host ---------------------------------------------------------------------------------------


def test_rendezvous_same_host_is_loopback() -> None:
    """All members on this host: 127.0.0.1, whatever the addresses."""
    own = [{"ip": "192.168.1.10", "prefix": 24}]
    assert choose_rendezvous_host(own, [[{"ip": "192.168.1.10", "prefix": 24}]], True) == "127.0.0.1"


def test_rendezvous_picks_the_address_on_the_shared_subnet() -> None:
    """Among several own addresses, the one whose subnet every other member has an address in."""
    own = [
        {"ip": "127.0.0.1", "prefix": 8},
        {"ip": "fe80::1", "prefix": 64},
        {"ip": "10.8.0.2", "prefix": 24},
        {"ip": "192.168.1.10", "prefix": 24},
    ]
    others = [
        [{"ip": "192.168.1.20", "prefix": 24}, {"ip": "172.17.0.1", "prefix": 16}],
        [{"ip": "fe80::2", "prefix": 64}, {"ip": "192.168.1.30", "prefix": 24}, {"ip": "10.9.0.1", "prefix": 24}],
    ]
    assert choose_rendezvous_host(own, others, False) == "192.168.1.10"


def test_rendezvous_needs_every_member_on_the_subnet() -> None:
    """A subnet shared with only some members is skipped for one shared with all."""
    own = [{"ip": "10.8.0.2", "prefix": 24}, {"ip": "192.168.1.10", "prefix": 16}]
    others = [[{"ip": "10.8.0.3"}, {"ip": "192.168.7.7"}], [{"ip": "192.168.200.1"}]]
    assert choose_rendezvous_host(own, others, False) == "192.168.1.10"


def test_rendezvous_without_shared_subnet_is_the_first_non_loopback() -> None:
    """No subnet in common: the first non-loopback IPv4 address; none at all: loopback."""
    own = [{"ip": "127.0.1.1", "prefix": 8}, {"ip": "10.0.0.5", "prefix": 24}, {"ip": "10.1.0.5", "prefix": 24}]
    assert choose_rendezvous_host(own, [[{"ip": "172.16.0.9", "prefix": 12}]], False) == "10.0.0.5"
    assert choose_rendezvous_host([{"ip": "127.0.0.1", "prefix": 8}, {"ip": "::1", "prefix": 128}],
                                  [[{"ip": "10.0.0.1"}]], False) == "127.0.0.1"


# --- gpu_memory_of / cpu_cores_of / ram_of ------------------------------------------------------------------------


@pytest.mark.parametrize("gpu_info, expected", [
    (None, 0),
    ([], 0),
    ({}, 0),
    ("RTX 4090", 0),
    ([{"name": "no memory key"}], 0),
    ([{"memory_total_mb": None}], 0),
    ([{"memory_total_mb": "lots"}], 0),
    ([{"memory_total_mb": [1, 2]}], 0),
    ([{"memory_total_mb": float("nan")}], 0),
    ([{"memory_total_mb": -5}], 0),
    (["not a dict", None, 7], 0),
    ([{"memory_total_mb": 8192}], 8192),
    ([{"memory_total_mb": "8192"}], 8192),
    ([{"memory_total_mb": 4096}, "junk", {"memory_total_mb": 24576}, {"memory_total_mb": "bad"}], 24576),
])
def test_gpu_memory_of_odd_inputs(gpu_info: Any, expected: int) -> None:
    """The largest well-formed memory_total_mb; malformed entries count as 0 and never raise."""
    assert gpu_memory_of(gpu_info) == expected


@pytest.mark.parametrize("cpu_info, expected", [
    (None, 1),
    ([], 1),
    ({}, 1),
    ({"logical_cores": None, "physical_cores": None}, 1),
    ({"logical_cores": 0}, 1),
    ({"logical_cores": "many"}, 1),
    ({"logical_cores": "many", "physical_cores": 6}, 6),
    ({"logical_cores": {"n": 4}}, 1),
    ({"physical_cores": 4}, 4),
    ({"logical_cores": 16, "physical_cores": 8}, 16),
    ({"logical_cores": "12"}, 12),
])
def test_cpu_cores_of_odd_inputs(cpu_info: Any, expected: int) -> None:
    """Logical cores, else physical, else 1; malformed values never raise."""
    assert cpu_cores_of(cpu_info) == expected


@pytest.mark.parametrize("ram_info, expected", [
    (None, 0),
    ([], 0),
    ({}, 0),
    ("16 GB", 0),
    ({"total_mb": None}, 0),
    ({"total_mb": "a lot"}, 0),
    ({"total_mb": float("inf")}, 0),
    ({"total_mb": 16384}, 16384),
    ({"total_mb": 16384.7}, 16384),
])
def test_ram_of_odd_inputs(ram_info: Any, expected: int) -> None:
    """total_mb as a whole number; 0 for anything else."""
    assert ram_of(ram_info) == expected


# --- parse_interval -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value, expected", [
    ("200 steps", (200, "steps")),
    ("1 step", (1, "steps")),
    ("30s", (30, "seconds")),
    ("30 s", (30, "seconds")),
    ("45 sec", (45, "seconds")),
    ("10 seconds", (10, "seconds")),
    ("5 min", (300, "seconds")),
    ("2m", (120, "seconds")),
    ("1 minute", (60, "seconds")),
    ("  7 steps  ", (7, "steps")),
    ("5 hours", (18000, "seconds")),
    ("1.5 s", (1.5, "seconds")),
    (50, (50, "steps")),
])
def test_parse_interval_valid(value: Any, expected: tuple[int, str]) -> None:
    """Steps stay steps; seconds and minutes become seconds; a bare whole number is steps."""
    assert parse_interval(value) == expected


@pytest.mark.parametrize("value", ["", "   ", "0 steps", "0", 0, -5, "-5s", "5 fortnights", "5", "steps", "5 ms", "1.5 steps",
                                   True, False, 1.5, None, [200], {"steps": 200}])
def test_parse_interval_invalid(value: Any) -> None:
    """Anything else is None (booleans and fractions included)."""
    assert parse_interval(value) is None
