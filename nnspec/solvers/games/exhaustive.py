"""The exact value of a small grid game by enumerating every grid input in the ball (toys only)."""

from __future__ import annotations

import itertools
import math

import numpy as np

from nnspec.solvers.games.game import GridGame


def exhaustive_value(game: GridGame, max_points: int = 2_000_000) -> tuple[float, np.ndarray | None]:
    """(distance of the closest violating grid input, that input), or (inf, None) if none in the ball."""
    k = int(math.ceil(game.radius / game.tau + 1e-9))
    count = (2 * k + 1) ** game.n
    if count > max_points:
        raise ValueError(f"{count} grid inputs: too many to enumerate")
    steps = np.array(list(itertools.product(range(-k, k + 1), repeat=game.n)), dtype=np.int64)
    pts = np.unique(game.points(steps), axis=0)
    dist = game.distance(pts)
    pts, dist = pts[dist <= game.radius + 1e-12], dist[dist <= game.radius + 1e-12]
    s = game.evaluate(pts)
    viol = s < 0
    if not viol.any():
        return math.inf, None
    i = np.argmin(np.where(viol, dist, np.inf))
    return float(dist[i]), pts[i]
