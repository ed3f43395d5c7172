"""Best-first search for upper bounds of the cooperative game ("inadmissible A*", DeepGame section 6.4).

In the cooperative game both players minimise the distance to a violation, so a node's children are
all (feature, manipulation) pairs at once. A node x at distance g with s(x) > 0 is keyed

    f(x) = g + weight * s(x) / rate

where ``rate`` estimates how fast s falls per unit of distance (the steepest single-move drop seen
at the root, raised whenever a steeper one shows up). With weight 1 and a sound rate this would be
the admissible A* of ``astar.py``; the paper enlarges the heuristic "proportionally with a constant"
to go after violations rather than proofs, so nothing here is a lower bound. What it finds is real:
every violation is a grid input the model evaluated with s < 0, pruned greedily (reverting
manipulations while it still violates), and its distance is an upper bound of the game value.

Every expansion evaluates all children of the popped nodes in one batched model call (several nodes
are popped together until a batch is full). Nodes are stored as (parent, dimension, sign) records,
not as input vectors, so a frontier of a million nodes costs tens of megabytes; the frontier is
capped at ``max_frontier`` by dropping its worst half.
"""

from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass, field

import numpy as np

from nnspec.solvers.games.game import GridGame
from nnspec.solvers.games.drive import Search, drive
from nnspec.solvers.games.mcts import prune_search


@dataclass(frozen=True)
class UpperResult:
    upper: float  # distance of the closest (pruned) violation found; inf if none
    witness: np.ndarray | None
    queries: int
    iterations: int  # nodes expanded
    trace: list[tuple[int, float, float]]  # (queries, upper, seconds), each time the upper bound falls
    frontier_peak: int = 0
    history: list[tuple[int, np.ndarray]] = field(default_factory=list)  # (queries, violation) as found
    stop: str = "budget"  # budget | time | converged (upper within epsilon of floor) | exhausted (no node left
    #                       closer than the upper bound among the moves searched: not a proof with candidates)


class _Tree:
    """Nodes as parallel lists: parent, moved dimension, sign, s, distance and a Zobrist hash of the
    step vector (the sum of one random 64-bit word per unit step, so a child's is its parent's plus
    one word, and orders of the same moves meet); the root is node 0."""

    def __init__(self, s0: float):
        self.parent, self.dim, self.sign, self.s, self.g, self.key = [-1], [-1], [0], [s0], [0.0], [0]

    def add(self, parent: int, dim: int, sign: int, s: float, g: float, key: int) -> int:
        for column, value in zip((self.parent, self.dim, self.sign, self.s, self.g, self.key),
                                 (parent, dim, sign, s, g, key)):
            column.append(value)
        return len(self.parent) - 1

    def steps(self, node: int, n: int) -> np.ndarray:
        k = np.zeros(n, dtype=np.int64)
        while node > 0:
            k[self.dim[node]] += self.sign[node]
            node = self.parent[node]
        return k


def best_first(game: GridGame, max_queries: int = 10_000, **options) -> UpperResult:
    return drive(best_first_search(game, max_queries, **options), game.evaluate)


def best_first_search(game: GridGame, max_queries: int = 10_000, weight: float = 4.0, batch: int = 1,
                      max_frontier: int = 500_000, candidates: int = 0, seed: int = 0, max_seconds: float = 0.0,
                      floor: float = 0.0, epsilon: float = 0.0) -> Search:
    """``best_first`` as a generator (``s = yield points``), to run many centres in lockstep.
    Stops at the query budget, after ``max_seconds`` (0: no limit), or once the upper bound is
    within ``epsilon`` of ``floor``, a known lower bound of the game value (for L0 one manipulation:
    nothing can be closer than one changed dimension)."""
    """``batch``: nodes popped per model call (1: strict best-first; more: fewer, larger calls).
    ``candidates``: after the root's expansion, expand only the moves whose drop of s at the root
    was among the largest ``candidates`` (0: all moves, always)."""
    s0 = float((yield game.x0[None])[0])
    queries = 1
    if s0 < 0:
        return UpperResult(0.0, game.x0.copy(), queries, 0, [(1, 0.0, 0.0)], history=[(1, game.x0.copy())])
    words = np.random.default_rng(seed).integers(-2**63, 2**63 - 1, size=game.n, dtype=np.int64)
    tree = _Tree(s0)
    seen = {0}
    heap: list[tuple[float, int]] = [(0.0, 0)]  # (key, node)
    rate = 0.0  # the steepest fall of s per unit distance seen so far
    upper, witness = math.inf, None
    started = time.perf_counter()
    trace, history = [(queries, upper, 0.0)], []
    expanded, peak = 0, 1
    allowed = None  # (n, 2) mask of the candidate moves, once the root is expanded
    stop = "budget"
    while True:
        if upper - floor <= epsilon:
            stop = "converged"
            break
        if not heap:
            stop = "exhausted"
            break
        if queries >= max_queries:
            break
        if max_seconds and time.perf_counter() - started > max_seconds:
            stop = "time"
            break
        # --- pop nodes; their children inside the ball (and closer than the best violation) form one batch
        parent, dims, signs, dist, keys, points = [], [], [], [], [], []
        popped = 0
        while heap and popped < batch and sum(map(len, dims)) < max_queries - queries:
            _, node = heapq.heappop(heap)
            popped += 1
            if tree.g[node] >= upper:
                continue
            steps = tree.steps(node, game.n)
            x = game.points(steps[None])[0]
            _, d, sg = game.move_arrays(steps)
            if allowed is not None:
                ok = allowed[d, (1 - sg) // 2]
                d, sg = d[ok], sg[ok]
            g = game.child_distances(x, tree.g[node], d, sg)
            h = np.full(len(d), tree.key[node], dtype=np.int64) + np.where(sg > 0, words[d], -words[d])  # wraps
            keep = g <= min(game.radius, upper) + 1e-12
            keep &= np.fromiter((int(k) not in seen for k in h), dtype=bool, count=len(h))
            d, sg, g, h = d[keep], sg[keep], g[keep], h[keep]
            seen.update(h.tolist())
            pts = np.repeat(x[None], len(d), axis=0)
            pts[np.arange(len(d)), d] = np.clip(game.x0[d] + game.tau * (steps[d] + sg), game.lower[d], game.upper[d])
            for column, value in zip((parent, dims, signs, dist, keys, points), ([node] * len(d), d, sg, g, h, pts)):
                column.append(value)
        expanded += popped
        if not dims or sum(map(len, dims)) == 0:
            continue
        parent = np.concatenate([np.asarray(p, dtype=np.int64) for p in parent])
        dims, signs, dist, keys, points = (np.concatenate(c) for c in (dims, signs, dist, keys, points))
        room = max_queries - queries
        parent, dims, signs, dist, keys, points = (c[:room] for c in (parent, dims, signs, dist, keys, points))
        s = yield points
        queries += len(points)
        # --- the heuristic's scale: the steepest fall per unit distance seen so far
        parent_s, parent_g = np.asarray(tree.s)[parent], np.asarray(tree.g)[parent]
        rate = max(rate, float(np.max((parent_s - s) / np.maximum(dist - parent_g, 1e-12))))
        if candidates and allowed is None:
            drop = np.full((game.n, 2), -np.inf)
            drop[dims, (1 - signs) // 2] = s0 - s
            top = np.argsort(-drop.ravel(), kind="stable")[:candidates]
            allowed = np.zeros(2 * game.n, dtype=bool)
            allowed[top] = True
            allowed = allowed.reshape(game.n, 2)
        viol = s < 0
        if viol.any():
            j = int(np.argmin(np.where(viol, dist, np.inf)))
            if dist[j] < upper:
                x, extra = yield from prune_search(game, points[j], max_queries - queries)
                queries += extra
                upper, witness = float(game.distance(x[None])[0]), x
                trace.append((queries, upper, time.perf_counter() - started))
                history.append((queries, x))
        scale = rate if rate > 0 else 1.0 / max(game.radius, 1e-12)
        for i in np.nonzero(~viol & (dist < upper))[0]:
            node = tree.add(int(parent[i]), int(dims[i]), int(signs[i]), float(s[i]), float(dist[i]), int(keys[i]))
            heapq.heappush(heap, (float(dist[i] + weight * s[i] / scale), node))
        peak = max(peak, len(heap))
        if len(heap) > max_frontier:
            heap = heapq.nsmallest(max_frontier // 2, heap)
            heapq.heapify(heap)
    return UpperResult(upper, witness, queries, expanded, trace, peak, history, stop)
