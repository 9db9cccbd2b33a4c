"""The `auto` rule: DDP over fast links, DiLoCo with an H that keeps communication near 10% over slow ones."""

from __future__ import annotations

import pytest

from app.scheduling.decide import Link, SyncChoice, choose_sync, slowest_link

AUTO = {"sync": "auto", "inner_steps": 100, "compression": "fp16"}
PARAMS = 5_000_000  # 20 MB of fp32 gradients


def test_slow_link_picks_diloco_with_h_bounding_communication_to_a_tenth() -> None:
    # DDP: 2 members ring-all-reduce 20 MB, each sends 20 MB = 160 Mbit over 10 Mbit/s = 16 s a 0.05 s step.
    choice = choose_sync(AUTO, PARAMS, 2, 0.05, Link(10.0, 0.001))
    assert choice.mode == "diloco" and choice.compression == "fp16"
    # fp16 all-gather: 10 MB = 80 Mbit, 8.001 s; H × 0.05 s × 10% ≥ 8.001 s → H = 1601.
    assert choice.inner_steps == 1601
    assert choice.describe() == ("diloco, H=1601, fp16: slowest link 10 Mbit/s, DDP would spend 100% of each step "
                                 "communicating")


def test_int8_needs_about_half_the_inner_steps_of_fp16() -> None:
    fp16 = choose_sync(AUTO, PARAMS, 2, 0.05, Link(10.0, 0.0))
    int8 = choose_sync({**AUTO, "compression": "int8"}, PARAMS, 2, 0.05, Link(10.0, 0.0))
    assert int8.mode == "diloco" and 0.49 < int8.inner_steps / fp16.inner_steps < 0.52


def test_fast_link_keeps_ddp_and_says_its_share() -> None:
    # 160 Mbit over 10 Gbit/s = 0.016 s against a 0.1 s step: 16% of the step (< 20%), 14% of step + exchange.
    choice = choose_sync(AUTO, PARAMS, 2, 0.1, Link(10_000.0, 0.0))
    assert choice == SyncChoice("ddp", 100, "fp16", "slowest link 10000 Mbit/s, DDP would spend 14% of each step "
                                                    "communicating")


def test_the_twenty_percent_threshold() -> None:
    # The exchange takes exactly 0.016 s: DDP below 0.08 s × 20% = 0.016, DiLoCo at or above it.
    assert choose_sync(AUTO, PARAMS, 2, 0.0801, Link(10_000.0, 0.0)).mode == "ddp"
    assert choose_sync(AUTO, PARAMS, 2, 0.0799, Link(10_000.0, 0.0)).mode == "diloco"


@pytest.mark.parametrize("config, world, link, expected", [
    ({**AUTO, "sync": "diloco"}, 2, Link(10_000.0, 0.0), SyncChoice("diloco", 100, "fp16", "set by the task")),
    ({**AUTO, "sync": "ddp"}, 2, Link(1.0, 0.1), SyncChoice("ddp", 100, "fp16", "set by the task")),
    (AUTO, 1, Link(1.0, 0.1), SyncChoice("ddp", 100, "fp16", "one member: nothing to exchange")),
    (AUTO, 3, None, SyncChoice("ddp", 100, "fp16", "no measured link between the members")),
])
def test_explicit_modes_single_members_and_unmeasured_links(config: dict[str, object], world: int, link: Link | None,
                                                            expected: SyncChoice) -> None:
    assert choose_sync(config, PARAMS, world, 0.05, link) == expected


def test_latency_counts_for_small_models() -> None:
    # 1000 values are nothing at 1 Gbit/s, but 2 × 50 ms of round trips are not.
    assert choose_sync(AUTO, 1000, 2, 0.1, Link(1000.0, 0.0)).mode == "ddp"
    assert choose_sync(AUTO, 1000, 2, 0.1, Link(1000.0, 0.05)).mode == "diloco"


def test_slowest_link_takes_the_lowest_throughput_and_the_longest_latency() -> None:
    assert slowest_link([]) is None
    assert slowest_link([(940.0, 0.4), (94.0, 1.5), (300.0, 7.0)]) == Link(94.0, 0.007)
