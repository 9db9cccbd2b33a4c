"""Pure arithmetic of elastic training (no torch): how a step's global batch is split among the members."""

from __future__ import annotations

import math
from collections.abc import Sequence

REBALANCE_AFTER = (5, 25)  # steps after a regroup at which the shares are first split by measured speed
REBALANCE_EVERY = 100  # steps between later re-splits


def split(total: int, weights: Sequence[float]) -> list[int]:
    """`total` in parts proportional to `weights` (largest remainder), every part at least 1 when total allows."""
    count = len(weights)
    if count == 0:
        return []
    clean = [w if math.isfinite(w) and w > 0 else 0.0 for w in weights]
    if sum(clean) <= 0:
        clean = [1.0] * count
    floor = 1 if total >= count else 0
    rest = total - floor * count
    scale = sum(clean)
    exact = [rest * w / scale for w in clean]
    parts = [floor + int(e) for e in exact]
    leftover = total - sum(parts)
    by_remainder = sorted(range(count), key=lambda i: (-(exact[i] - int(exact[i])), i))
    for i in by_remainder[:leftover]:
        parts[i] += 1
    return parts


def offsets(shares: Sequence[int]) -> list[int]:
    """Where each rank's slice of the global batch starts."""
    out, at = [], 0
    for share in shares:
        out.append(at)
        at += share
    return out


def rebalance_due(steps_since_regroup: int) -> bool:
    """True at the steps where the shares are recomputed from the measured speeds."""
    return steps_since_regroup in REBALANCE_AFTER or (steps_since_regroup > 0 and steps_since_regroup % REBALANCE_EVERY == 0)


def smooth(previous: Sequence[float], measured: Sequence[float], weight: float = 0.2) -> list[float]:
    """An exponential moving average of each member's samples per second (a zero measurement keeps the old value)."""
    if len(previous) != len(measured):
        return list(measured)
    return [p if m <= 0 else (m if p <= 0 else p + weight * (m - p)) for p, m in zip(previous, measured, strict=True)]


def too_slow(speeds: Sequence[float], rank: int, bound: float = 1 / 8) -> bool:
    """True when this rank's speed is below `bound` of the group's median (it is released, never failed)."""
    known = sorted(s for s in speeds if s > 0)
    if len(known) < 2 or not 0 <= rank < len(speeds) or speeds[rank] <= 0:
        return False
    median = known[len(known) // 2] if len(known) % 2 else (known[len(known) // 2 - 1] + known[len(known) // 2]) / 2
    return speeds[rank] < bound * median
