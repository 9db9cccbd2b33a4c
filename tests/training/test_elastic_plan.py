"""The pure arithmetic of elastic training: splitting a global batch by speed, re-split points, slow members."""

from __future__ import annotations

import math

import pytest

from app.training.elastic_plan import offsets, rebalance_due, smooth, split, too_slow


@pytest.mark.parametrize(("total", "weights", "expected"), [
    (48, [1, 1, 1], [16, 16, 16]),
    (32, [3, 1], [24, 8]),
    (10, [1, 1, 1], [4, 3, 3]),  # the remainder goes to the largest fractions, lowest rank first
    (5, [1000, 1, 1], [3, 1, 1]),  # every member keeps at least one sample while the batch allows
    (2, [1, 1, 1], [1, 1, 0]),  # fewer samples than members
    (12, [0, math.nan, -1], [4, 4, 4]),  # no usable speed: equal parts
    (7, [], []),
])
def test_split_is_proportional_whole_and_complete(total: int, weights: list[float], expected: list[int]) -> None:
    parts = split(total, weights)
    assert parts == expected
    assert sum(parts) == (total if weights else 0)


def test_offsets_place_each_rank_after_the_previous_ones() -> None:
    assert offsets([24, 8]) == [0, 24]
    assert offsets([4, 3, 3]) == [0, 4, 7]


def test_rebalance_points() -> None:
    assert [s for s in range(0, 301) if rebalance_due(s)] == [5, 25, 100, 200, 300]


def test_smooth_keeps_old_figures_for_missing_measurements() -> None:
    assert smooth([100.0, 0.0], [200.0, 50.0]) == [120.0, 50.0]
    assert smooth([100.0, 80.0], [0.0, 80.0]) == [100.0, 80.0]
    assert smooth([1.0], [5.0, 6.0]) == [5.0, 6.0]  # a new membership: the new figures


def test_a_member_below_an_eighth_of_the_median_is_too_slow() -> None:
    speeds = [800.0, 900.0, 90.0]
    assert too_slow(speeds, 2)
    assert not too_slow(speeds, 0)
    assert not too_slow([800.0, 900.0, 120.0], 2)
    assert not too_slow([0.0, 0.0, 10.0], 2)  # one measured member: no median to compare with
    assert not too_slow([500.0], 0)
