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
        owner = np.empty(self.x0.size, dtype=np.int64)
        for f, dims in enumerate(self.features):
            owner[dims] = f
        object.__setattr__(self, "_order", np.concatenate(self.features).astype(np.int64) if self.features
                           else np.array([], dtype=np.int64))
        object.__setattr__(self, "_owner", owner)

    @property
    def n(self) -> int:
        return self.x0.size

    def points(self, steps: np.ndarray) -> np.ndarray:
        """clip(x0 + tau k) for step vectors (B, n)."""
        return np.clip(self.x0 + self.tau * steps, self.lower, self.upper)

    def distance(self, points: np.ndarray) -> np.ndarray:
        return np.linalg.norm(points - self.x0, ord=NORM_ORD[self.norm], axis=-1)

    def child_distances(self, x: np.ndarray, dist: float, dims: np.ndarray, signs: np.ndarray) -> np.ndarray:
        """Distances of the children of point ``x`` (at ``dist``) by one monotone move each, without
        building them: only one coordinate changes, and monotone moves never shrink |x_d - x0_d|."""
        old = np.abs(x[dims] - self.x0[dims])
        new = np.abs(np.clip(x[dims] + self.tau * signs, self.lower[dims], self.upper[dims]) - self.x0[dims])
        if self.norm == "l0":
            return dist + ((old == 0) & (new > 0))
        if self.norm == "l1":
            return dist - old + new
        if self.norm == "l2":
            return np.sqrt(np.maximum(dist * dist - old * old + new * new, 0.0))
        return np.maximum(dist, new)

    def move_arrays(self, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(features, dimensions, signs) of the monotone atomic manipulations from ``steps``: each
        dimension keeps moving the way it already moved; a move the domain clips away is none.
        Ordered by feature, then dimension within it, then +tau before -tau."""
        d = self._order
        x = self.points(steps[None])[0][d]
        k = steps[d]
        up = (k >= 0) & (x < self.upper[d])
        down = (k <= 0) & (x > self.lower[d])
        ok = np.stack([up, down], axis=1).ravel()
        dims = np.repeat(d, 2)[ok]
        signs = np.tile(np.array([1, -1], dtype=np.int64), d.size)[ok]
        return self._owner[dims], dims, signs

    def moves(self, steps: np.ndarray) -> list[tuple[int, int, int]]:
        f, d, s = self.move_arrays(steps)
        return list(zip(f.tolist(), d.tolist(), s.tolist()))
