"""The cooperative game of DeepGame on the tau-grid: Player I picks a feature, Player II an atomic
manipulation inside it (one dimension, +tau or -tau, clipped to the domain). A play ends at a
violation (s < 0) or when the input leaves the ball. Its value is the distance of the closest
grid input that violates: the grid version of the maximum safe radius.

States are integer step vectors k (the input is clip(x0 + tau k)); the game is pure data plus a
batched ``evaluate``; the search algorithms that play it live beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

NORM_ORD = {"l0": 0, "l1": 1, "l2": 2, "linf": np.inf}


@dataclass(frozen=True)
class GridGame:
    x0: np.ndarray  # (n,) the centre
    lower: np.ndarray  # (n,) the domain
    upper: np.ndarray
    tau: float  # the atomic manipulation
    norm: str  # l0 | l1 | l2 | linf
    radius: float  # the ball: plays end outside it
    features: tuple[np.ndarray, ...]  # a partition of range(n)
    evaluate: Callable[[np.ndarray], np.ndarray]  # points (B, n) -> s (B,); s < 0 is a violation

    def __post_init__(self):
        if self.norm not in NORM_ORD:
            raise ValueError(f"the grid game supports {', '.join(NORM_ORD)}, not {self.norm!r}")
        covered = np.sort(np.concatenate(self.features)) if self.features else np.array([], dtype=int)
        if not np.array_equal(covered, np.arange(self.x0.size)):
            raise ValueError("the features must partition the input dimensions")

    @property
    def n(self) -> int:
        return self.x0.size

    def points(self, steps: np.ndarray) -> np.ndarray:
        """clip(x0 + tau k) for step vectors (B, n)."""
        return np.clip(self.x0 + self.tau * steps, self.lower, self.upper)

    def distance(self, points: np.ndarray) -> np.ndarray:
        return np.linalg.norm(points - self.x0, ord=NORM_ORD[self.norm], axis=-1)

    def moves(self, steps: np.ndarray) -> list[tuple[int, int, int]]:
        """(feature, dimension, sign) of the monotone atomic manipulations from ``steps``: each
        dimension keeps moving the way it already moved; a move the domain clips away is none."""
        out = []
        x = self.points(steps[None])[0]
        for f, dims in enumerate(self.features):
            for d in dims:
                for sign in (1, -1):
                    if steps[d] * sign < 0:
                        continue
                    if (sign > 0 and x[d] >= self.upper[d]) or (sign < 0 and x[d] <= self.lower[d]):
                        continue
                    out.append((f, int(d), sign))
        return out
