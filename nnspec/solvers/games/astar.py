"""Admissible A*: an anytime lower bound (and upper bound) for the cooperative grid game.

Nodes are grid inputs reached by *monotone* plays (every dimension moves one way only); every grid
input in the ball is reached so. With a sound Lipschitz constant L of s in the game's norm, a node
x at distance g with s(x) > 0 bounds every violation x' beyond it: ||x' - x|| >= s(x) / L = h, and
for monotone plays the distances combine as g + h (L1), sqrt(g^2 + h^2) (L2), max(g, h) (L-inf),
since all coordinates of x - x0 and x' - x share their signs. That combination f is the node's
key; every unexplored grid input lies beyond some frontier node, so min f over the frontier is a
lower bound of the game value at all times. For L2 the key is not consistent (a child's can dip
below its parent's), so the reported bound is the running maximum of these valid bounds: the value
is fixed, so the maximum is valid too, and it only rises. Nodes are expanded in batches
(all their children evaluated in one call). Memory is bounded by ``max_frontier``.

The bound is for the tau-grid game. It is a bound on the true maximum safe radius only under
Theorem 1 of the DeepGame paper (a margin condition on the grid inputs), which the caller must
check or state; a heuristic from an *estimated* L is not admissible, and the caller must say so.
"""

from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass, field

import numpy as np

from nnspec.solvers.games.drive import drive
from nnspec.solvers.games.game import GridGame


def combine(norm: str, g: np.ndarray, h: np.ndarray) -> np.ndarray:
    if norm == "l1":
        return g + h
    if norm == "l2":
        return np.sqrt(g * g + h * h)
    return np.maximum(g, h)


@dataclass(frozen=True)
class AStarResult:
    lower: float  # a lower bound of the grid game value (inf: no violation in the ball)
    upper: float  # the closest violating grid input found (inf if none)
    witness: np.ndarray | None
    queries: int
    expanded: int
    frontier_peak: int
    stop: str  # exact | converged (within epsilon) | queries | time | memory
    trace: list[tuple[int, float, float, float]] = field(default_factory=list)  # (queries, lower, upper, seconds)


def admissible_astar(game: GridGame, lipschitz: float, max_queries: int = 100_000, **options) -> AStarResult:
    return drive(astar_search(game, lipschitz, max_queries, **options), game.evaluate)


def astar_search(game: GridGame, lipschitz: float, max_queries: int = 100_000, max_frontier: int = 1_000_000,
                 max_seconds: float = 0.0, epsilon: float = 0.0, known_upper: float = math.inf,
                 batch: int = 16):
    """``admissible_astar`` as a generator (``s = yield points``), to run many centres in lockstep.
    ``known_upper``: the distance of a grid input known to violate (found by an upper-bound
    search): nodes keyed beyond it are not expanded, and the bound is exact once the frontier reaches
    it. ``epsilon``: stop once the bounds are that close. ``max_seconds``: 0 for no limit."""
    if not lipschitz > 0:
        raise ValueError("A* needs a positive Lipschitz constant")
    if game.norm == "l0":
        raise ValueError("admissible A* needs l1, l2 or linf: a Lipschitz constant bounds no l0 distance")
    s0 = float((yield game.x0[None])[0])
    queries = 1
    if s0 < 0:
        return AStarResult(0.0, 0.0, game.x0.copy(), queries, 0, 0, "exact", [(1, 0.0, 0.0, 0.0)])
    started = time.perf_counter()
    root = np.zeros(game.n, dtype=np.int64)
    counter = 0
    heap: list[tuple[float, int, bytes, float]] = [(s0 / lipschitz if s0 > 0 else 0.0, counter, root.tobytes(), 0.0)]
    seen = {root.tobytes()}
    upper, witness = known_upper, None
    expanded, peak = 0, 1
    best_lower = min(heap[0][0], upper)
    trace = [(queries, best_lower, upper, 0.0)]
    stop = "exact"

    def bound() -> float:
        nonlocal best_lower
        best_lower = max(best_lower, min(heap[0][0] if heap else math.inf, upper))
        return best_lower
    while heap:
        if heap[0][0] >= upper:
            break  # no frontier node can lead to anything closer: the bound is exact
        if epsilon and upper - bound() <= epsilon:
            stop = "converged"
            break
        if queries >= max_queries:
            stop = "queries"
            break
        if max_seconds and time.perf_counter() - started > max_seconds:
            stop = "time"
            break
        # pop up to `batch` nodes, as many as the budget can evaluate the children of
        popped, children, new_keys = [], [], set()
        while heap and len(popped) < batch and heap[0][0] < upper:
            node = heap[0]
            steps = np.frombuffer(node[2], dtype=np.int64)
            mine = []
            for _, d, sign in game.moves(steps):
                child = steps.copy()
                child[d] += sign
                ck = child.tobytes()
                if ck not in seen and ck not in new_keys:
                    mine.append((ck, child))
            if queries + len(children) + len(mine) > max_queries:
                break  # this node stays in the frontier, so its cone stays covered
            heapq.heappop(heap)
            popped.append(node)
            for ck, child in mine:
                new_keys.add(ck)
                children.append(child)
        if not popped:
            stop = "queries"
            break
        seen |= new_keys
        expanded += len(popped)
        if not children:
            trace.append((queries, bound(), upper, time.perf_counter() - started))
            continue
        steps = np.stack(children)
        pts = game.points(steps)
        g = game.distance(pts)
        inside = g <= game.radius + 1e-12
        steps, pts, g = steps[inside], pts[inside], g[inside]
        if len(steps):
            s = yield pts
            queries += len(steps)
            viol = s < 0
            if viol.any():
                i = int(np.argmin(np.where(viol, g, np.inf)))
                if g[i] < upper:
                    upper, witness = float(g[i]), pts[i].copy()
            f = combine(game.norm, g, np.maximum(s, 0) / lipschitz)
            for j in np.nonzero(~viol)[0]:
                if f[j] < upper:
                    counter += 1
                    heapq.heappush(heap, (float(f[j]), counter, steps[j].tobytes(), float(g[j])))
        peak = max(peak, len(heap))
        if len(heap) > max_frontier:
            stop = "memory"
            break
        trace.append((queries, bound(), upper, time.perf_counter() - started))
    lower = bound()
    return AStarResult(lower, upper, witness, queries, expanded, peak, stop if heap and heap[0][0] < upper else "exact", trace)
