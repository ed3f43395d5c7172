"""Monte Carlo tree search for upper bounds of the cooperative game (DeepGame Algorithm 1).

The tree alternates Player I (a feature, chosen by UCB over the node's feature statistics) and
Player II (an atomic manipulation inside it, by UCB over the moves' statistics). Each iteration
selects a path, expands one move, and runs a batch of playouts from the new node; all the
playouts advance together and each step of all of them is one model call.

Playouts are guided (``guided=True``, the default): the first call evaluates every atomic
manipulation of the centre in one batch, and playouts then draw moves with probability rising with
how much that move alone lowered s (a softmax over the drops, mixed with 10% uniform), and
unvisited moves of Player II are tried in the same order. Black-box still: the guide is built from
queries, charged to the budget. ``guided=False`` gives the paper's uniform random playouts. A playout ends at a
violation (reward 1 - distance / radius), outside the ball, or after ``max_playout`` moves (reward
from how far the margin fell). The closest violation found is then pruned greedily: manipulated
dimensions are reverted while the input still violates (each round evaluates every candidate
revert in one batch), which can only shorten it. Its distance is an upper bound of the game value.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from nnspec.solvers.games.drive import drive
from nnspec.solvers.games.game import GridGame


@dataclass
class _Node:
    visits: int = 0
    value: float = 0.0
    feature_stats: dict = field(default_factory=dict)  # f -> [visits, value]
    move_stats: dict = field(default_factory=dict)  # (d, sign) -> [visits, value]


@dataclass(frozen=True)
class MctsResult:
    upper: float  # distance of the closest (pruned) violation found; inf if none
    witness: np.ndarray | None
    queries: int
    iterations: int
    trace: list[tuple[int, float, float]]  # (queries, upper, seconds)
    history: list[tuple[int, np.ndarray]] = field(default_factory=list)  # (queries, violation) as found
    stop: str = "budget"  # budget | time | converged (upper within epsilon of floor)


def _ucb(stats: list, parent: int, c: float) -> float:
    n, v = stats
    return math.inf if n == 0 else v / n + c * math.sqrt(math.log(max(parent, 1)) / n)


def mcts(game: GridGame, max_queries: int = 10_000, playouts: int = 32, max_playout: int | None = None,
         exploration: float = 1.0, seed: int = 0, guided: bool = True, max_seconds: float = 0.0,
         floor: float = 0.0, epsilon: float = 0.0) -> MctsResult:
    """Stops at the query budget, after ``max_seconds`` (0: none), or once the upper bound is within
    ``epsilon`` of ``floor`` (a known lower bound of the game value)."""
    rng = np.random.default_rng(seed)
    s0 = float(game.evaluate(game.x0[None])[0])
    queries = 1
    if s0 < 0:
        return MctsResult(0.0, game.x0.copy(), queries, 0, [(1, 0.0, 0.0)], [(1, game.x0.copy())])
    started = time.perf_counter()
    guide = None
    if guided and 2 * game.n < max_queries // 2:  # the guide may take at most half the budget
        guide, spent, found = _guide(game, s0)
        queries += spent
        if found is not None:  # a single manipulation already violates
            d = float(game.distance(found[None])[0])
            return MctsResult(d, found, queries, 0, [(1, math.inf, 0.0), (queries, d, time.perf_counter() - started)],
                              [(queries, found)])
    max_playout = max_playout or max(4, int(4 * math.ceil(game.radius / game.tau)) * (game.n if game.norm == "linf" else 1))
    max_playout = min(max_playout, 4 * game.n)
    tree: dict[bytes, _Node] = {}
    best, best_x = math.inf, None
    trace, history = [(queries, best, 0.0)], []
    iterations = 0
    stop = "budget"
    while queries < max_queries:
        if best - floor <= epsilon:
            stop = "converged"
            break
        if max_seconds and time.perf_counter() - started > max_seconds:
            stop = "time"
            break
        iterations += 1
        # --- selection and expansion
        steps = np.zeros(game.n, dtype=np.int64)
        path = []
        while True:
            node = tree.setdefault(steps.tobytes(), _Node())
            moves = game.moves(steps)
            if not moves or node.visits == 0:
                break
            by_feature: dict[int, list] = {}
            for f, d, sgn in moves:
                by_feature.setdefault(f, []).append((d, sgn))
            f = max(by_feature, key=lambda k: (_ucb(node.feature_stats.setdefault(k, [0, 0.0]), node.visits,
                                                    exploration), rng.random()))
            d, sgn = max(by_feature[f], key=lambda m: (_ucb(node.move_stats.setdefault(m, [0, 0.0]), node.visits,
                                                              exploration),
                                                         guide[1][m[0], (1 - m[1]) // 2] if guide else rng.random()))
            path.append((node, f, (d, sgn)))
            steps = steps.copy()
            steps[d] += sgn
            x = game.points(steps[None])[0]
            if game.distance(x[None])[0] > game.radius or len(path) > max_playout:
                break
        leaf = tree.setdefault(steps.tobytes(), _Node())
        # --- batched random playouts from the leaf
        rewards, found = _playouts(game, steps, playouts, max_playout, s0, rng, max_queries - queries, guide)
        queries += found["queries"]
        if found["distance"] < best:
            pruned, extra = prune_violation(game, found["x"], max_queries - queries)
            queries += extra
            best_x = pruned
            best = float(game.distance(pruned[None])[0])
            history.append((queries, pruned))
        reward = float(rewards.mean())
        # --- backpropagation
        leaf.visits += playouts
        leaf.value += reward * playouts
        for node, f, move in path:
            node.visits += playouts
            node.value += reward * playouts
            fs, ms = node.feature_stats[f], node.move_stats[move]
            fs[0] += playouts
            fs[1] += reward * playouts
            ms[0] += playouts
            ms[1] += reward * playouts
        trace.append((queries, best, time.perf_counter() - started))
    return MctsResult(best, best_x, queries, iterations, trace, history, stop)


def _guide(game: GridGame, s0: float):
    """Evaluate every single manipulation of the centre (one batch): the playouts' move weights
    (probability over (dimension, sign), shape (n, 2)), the drops themselves, and the queries spent;
    plus the closest single-move violation if there is one."""
    steps = np.zeros((2 * game.n, game.n), dtype=np.int64)
    steps[np.arange(game.n), np.arange(game.n)] = 1
    steps[game.n + np.arange(game.n), np.arange(game.n)] = -1
    pts = game.points(steps)
    moved = np.any(pts != game.x0, axis=1)  # moves the domain clips away change nothing
    s = np.full(2 * game.n, s0)
    s[moved] = game.evaluate(pts[moved])
    found = None
    if (s < 0).any():
        dist = np.where(s < 0, game.distance(pts), np.inf)
        found = pts[int(np.argmin(dist))].copy()
    drop = (s0 - s).reshape(2, game.n).T  # (n, 2): column 0 is +tau, column 1 is -tau
    scale = max(float(np.std(drop[drop != 0])) if (drop != 0).any() else 0.0, 1e-12)
    w = np.exp(np.clip((drop - drop.max()) / scale, -50, 0))
    w[~moved.reshape(2, game.n).T] = 0
    p = 0.9 * w / max(w.sum(), 1e-300) + 0.1 * moved.reshape(2, game.n).T / max(moved.sum(), 1)
    return (p / p.sum(), drop), int(moved.sum()), found


def _playouts(game: GridGame, start: np.ndarray, count: int, max_len: int, s0: float, rng,
              limit: int, guide=None) -> tuple[np.ndarray, dict]:
    steps = np.repeat(start[None], count, axis=0)
    alive = np.ones(count, dtype=bool)
    rewards = np.zeros(count)
    min_s = np.full(count, s0)
    best = {"distance": math.inf, "x": None, "queries": 0}
    feats = game.features
    for _ in range(max_len):
        idx = np.nonzero(alive)[0]
        if len(idx) == 0:
            break
        if guide is not None:  # a move drawn by its effect at the centre
            pick = rng.choice(guide[0].size, size=len(idx), p=guide[0].ravel())
            d, sign = pick // 2, 1 - 2 * (pick % 2)
            cur = steps[idx, d]
            sign = np.where(cur != 0, np.sign(cur), sign)
        else:
            f = rng.integers(len(feats), size=len(idx))
            d = np.array([feats[i][rng.integers(len(feats[i]))] for i in f])
            cur = steps[idx, d]
            sign = np.where(cur != 0, np.sign(cur), rng.choice([-1, 1], size=len(idx)))
        steps[idx, d] += sign
        pts = game.points(steps[idx])
        dist = game.distance(pts)
        outside = dist > game.radius + 1e-12
        alive[idx[outside]] = False
        keep = np.nonzero(~outside)[0][: max(limit - best["queries"], 0)]  # never past the budget
        alive[idx[~outside][len(keep):]] = False
        ev, outside = idx[keep], np.ones(len(idx), dtype=bool)
        outside[keep] = False
        if len(ev) == 0:
            break
        s = game.evaluate(pts[keep])
        best["queries"] += len(ev)
        min_s[ev] = np.minimum(min_s[ev], s)
        viol = s < 0
        if viol.any():
            dv = dist[keep][viol]
            rewards[ev[viol]] = 1.0 - dv / game.radius
            j = int(np.argmin(dv))
            if dv[j] < best["distance"]:
                best["distance"], best["x"] = float(dv[j]), pts[keep][viol][j].copy()
            alive[ev[viol]] = False
    done = rewards == 0
    rewards[done] = 0.3 * np.clip(1 - min_s[done] / s0, 0, 1) if s0 > 0 else 0
    return rewards, best


def prune_violation(game: GridGame, x: np.ndarray, limit: int) -> tuple[np.ndarray, int]:
    """Revert manipulated dimensions while the input still violates; the closest survivor wins."""
    return drive(prune_search(game, x, limit), game.evaluate)


def prune_search(game: GridGame, x: np.ndarray, limit: int):
    """``prune_violation`` as a generator (``s = yield points``)."""
    queries = 0
    while True:
        changed = np.nonzero(x != game.x0)[0]
        if len(changed) == 0 or queries + len(changed) > limit:
            return x, queries
        cands = np.repeat(x[None], len(changed), axis=0)
        cands[np.arange(len(changed)), changed] = game.x0[changed]
        s = yield cands
        queries += len(changed)
        ok = s < 0
        if not ok.any():
            return x, queries
        dist = game.distance(cands)
        j = int(np.argmin(np.where(ok, dist, np.inf)))
        x = cands[j]
