"""The competitive game (feature robustness) by alpha-beta over features.

Player I picks the feature whose best attack is farthest (max); Player II attacks inside it (min).
The value is max over features f of MSR_f, the cooperative value restricted to f. Features are
searched in order; ``bounds(f, cutoff)`` returns (lower_f, upper_f) for the restricted game and may
stop as soon as it finds a violation at distance <= cutoff. Pruning: once alpha (the best lower
bound of any feature so far) is known, a feature whose upper bound is <= alpha cannot raise the
max, so it is not searched further. The result brackets the value: max_f lower_f <= FR <= max_f upper_f.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class FeatureRobustness:
    lower: float
    upper: float
    per_feature: tuple[tuple[float, float], ...]  # (lower_f, upper_f); pruned features: (-inf, upper_f)
    pruned: tuple[int, ...]
    best_feature: int | None  # the feature with the largest lower bound


def alpha_beta(count: int, quick_upper: Callable[[int], float], bounds: Callable[[int, float], tuple[float, float]],
               order: list[int] | None = None) -> FeatureRobustness:
    alpha, best = -math.inf, None
    per: list[tuple[float, float]] = [(-math.inf, math.inf)] * count
    pruned = []
    for f in order or range(count):
        up = quick_upper(f)
        if up <= alpha:  # this feature falls to an attack no farther than alpha: prune
            per[f] = (-math.inf, up)
            pruned.append(f)
            continue
        lo, hi = bounds(f, alpha)
        per[f] = (lo, min(hi, up))
        if lo > alpha:
            alpha, best = lo, f
    lower = max(lo for lo, _ in per)
    upper = max(hi for _, hi in per)
    return FeatureRobustness(lower, upper, tuple(per), tuple(pruned), best)


def minimax(values: list[float]) -> float:
    """Plain minimax of the same game from exact per-feature values (for tests)."""
    return max(values)
