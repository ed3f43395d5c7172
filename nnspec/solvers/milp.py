"""Exact minimal adversarial distance of a ReLU MLP by mixed-integer linear programming.

For layers y = W_k a + b_k with ReLU between them, centre x0, label l and target t, solve

    min  ||x - x0||_p        (p = inf: one variable r >= |x_i - x0_i|; p = 1: sum of e_i >= |x_i - x0_i|)
    s.t. lo <= x <= hi, |x - x0|_inf <= R,
         a = ReLU(W a_prev + b) by the big-M encoding with interval bounds,
         y_l - y_t <= -slack

with HiGHS (scipy's ``milp``). Minimising over targets gives the untargeted distance. The result is exact up
to the solver's tolerances: it is the known answer that the search backends are measured against.
Only small networks are practical (one binary per unstable ReLU).

``find_violation`` is the same encoding as a complete verifier of linear output constraints over a
box (branch and bound's last stage on small dense networks): is there an x whose rows are all at
most a goal? It and ``RelaxationLP`` use HiGHS through highspy, one thread per model.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix, vstack


@dataclass(frozen=True)
class MilpResult:
    distance: float  # inf when no violation exists within R; the best found when the time ran out
    x: np.ndarray | None
    target: int | None
    status: str  # optimal | infeasible | time
    lower: float = math.nan  # a proved lower bound of the distance (= distance when optimal)


# rounds of Anderson cuts before each MILP of find_violation and min_distance
# (``_Network.anderson_cuts``). mnist_fc 256x4 prop_0 eps 0.05, its worst row: the relaxation's
# minimum -2.20 -> -1.40 after one round (-1.394 after three); one row at a time on one core,
# 0 / 1 / 2 rounds: that row > 150 / 134 / 88 s; 256x2 prop_10 eps 0.05's nine rows 23.3 / 12.6
# / 17.0 s (five proved by the LP alone); 256x4 prop_8 eps 0.03's nine 97 / 95 / 109 s
CUT_ROUNDS = 1


def interval_bounds(layers, lo, hi):
    """Pre-activation bounds of every layer by interval arithmetic."""
    bounds, a_lo, a_hi = [], lo, hi
    for k, (w, b) in enumerate(layers):
        wp, wn = np.clip(w, 0, None), np.clip(w, None, 0)
        z_lo, z_hi = wp @ a_lo + wn @ a_hi + b, wp @ a_hi + wn @ a_lo + b
        bounds.append((z_lo, z_hi))
        a_lo, a_hi = np.maximum(z_lo, 0), np.maximum(z_hi, 0)
    return bounds


def min_distance(layers: list[tuple[np.ndarray, np.ndarray]], x0: np.ndarray, label: int, target: int | None,
                 norm: str = "linf", lo: float | np.ndarray = 0.0, hi: float | np.ndarray = 1.0,
                 max_radius: float = 1.0, slack: float = 0.0, time_limit: float = 60.0,
                 anytime: bool = False, pre_bounds=None, targets=None) -> MilpResult:
    """Exact minimal distance to an input where logit ``target`` >= logit ``label`` (+ slack).

    ``layers``: [(W, b), ...] with ReLU after every layer but the last. ``target`` None: any label.
    ``anytime``: when the time runs out, return the solver's proved lower bound (``lower``) instead
    of raising. ``pre_bounds``: a function (box_lo, box_hi) -> [(z_lo, z_hi), ...] of sound
    pre-activation bounds tighter than intervals (CROWN's), for smaller big-M constants.
    ``targets``: with ``target`` None, the labels to try; the others are known to have no violation
    within ``max_radius`` (a sound bound proved them), so they need no MILP. Each MILP starts from
    its LP relaxation tightened by CUT_ROUNDS rounds of Anderson cuts (``_Network.with_cuts``).
    """
    if target is None:
        # most likely runner-up first; every solution then tightens the box (and so the big-M
        # bounds) of the targets that follow, since the minimum can only be smaller
        y = np.asarray(x0, dtype=np.float64).reshape(-1)
        for w, b in layers[:-1]:
            y = np.maximum(w @ y + b, 0)
        logits = layers[-1][0] @ y + layers[-1][1]
        order = [int(t) for t in np.argsort(-logits) if t != label and (targets is None or t in targets)]
        best, lower, started = MilpResult(math.inf, None, None, "infeasible"), max_radius, time.perf_counter()
        for t in order:
            left = time_limit - (time.perf_counter() - started)
            if left <= 0:
                if not anytime:
                    raise RuntimeError("MILP did not finish: time limit reached")
                return MilpResult(best.distance, best.x, best.target, "time", 0.0)  # a target not tried: no bound
            radius = min(max_radius, best.distance * (1 + 1e-6) + 1e-9)
            r = min_distance(layers, x0, label, t, norm, lo, hi, radius, slack, left, anytime, pre_bounds)
            lower = min(lower, r.lower if r.status != "infeasible" else radius)
            if r.distance < best.distance:
                best = r
        if not math.isfinite(best.distance):
            return MilpResult(math.inf, None, None, "infeasible" if lower >= max_radius else "time", lower)
        status = "optimal" if lower >= best.distance * (1 - 1e-9) else "time"
        return MilpResult(best.distance, best.x, best.target, status, min(lower, best.distance))
    if norm not in ("linf", "l1"):
        raise ValueError("the MILP handles linf and l1 (l2 would need a quadratic objective)")
    started = time.perf_counter()
    x0 = np.asarray(x0, dtype=np.float64).reshape(-1)
    n = x0.size
    box_lo = np.maximum(np.broadcast_to(lo, n), x0 - max_radius)
    box_hi = np.minimum(np.broadcast_to(hi, n), x0 + max_radius)
    pre = interval_bounds(layers, box_lo, box_hi)
    if pre_bounds is not None:  # tighter sound bounds: intersect
        pre = [(np.maximum(a, c), np.minimum(b, d)) for (a, b), (c, d) in zip(pre, pre_bounds(box_lo, box_hi))]
    hidden = layers[:-1]
    # variable layout: x (n) | r (1 for linf, n for l1) | per hidden layer: a (h) then d (h)
    nr = 1 if norm == "linf" else n
    net = _Network(hidden, pre, box_lo, box_hi, extra=nr)
    idx = np.arange(n)
    ri = np.full(n, n) if norm == "linf" else n + idx
    net.rows.add(idx, ri, 1.0, -1.0, -np.inf, x0)  # x_i - r <= x0_i
    net.rows.add(idx, ri, -1.0, -1.0, -np.inf, -x0)  # -x_i - r <= -x0_i
    w, b = layers[-1]
    # y_label - y_target <= -slack
    net.rows.affine((w[label] - w[target])[None], net.last, None, 0.0, -np.inf, [-slack - (b[label] - b[target])])
    A, lbs, ubs = net.rows.matrix()
    var_lo, var_hi, integrality, nv = net.var_lo, net.var_hi, net.integrality, net.nv
    c = np.zeros(nv)
    c[n:n + nr] = 1
    tightened = net.with_cuts(c, A, lbs, ubs, CUT_ROUNDS, started + 0.5 * time_limit)
    if tightened is None:  # the relaxation has no point: no violation within max_radius
        return MilpResult(math.inf, None, target, "infeasible", max_radius)
    A, lbs, ubs = tightened
    time_limit = max(time_limit - (time.perf_counter() - started), 0.01)
    res = milp(c, constraints=LinearConstraint(A, lbs, ubs), bounds=Bounds(var_lo, var_hi),
               integrality=integrality, options={"time_limit": time_limit, "mip_rel_gap": 1e-9})
    if res.status == 2:  # infeasible: no violation within max_radius
        return MilpResult(math.inf, None, target, "infeasible", max_radius)
    if res.status != 0 or res.x is None:
        if not anytime:
            raise RuntimeError(f"MILP did not finish: {res.message}")
        bound = getattr(res, "mip_dual_bound", None)
        lower = float(bound) if bound is not None and math.isfinite(bound) else 0.0
        if res.x is None:
            return MilpResult(math.inf, None, target, "time", max(lower, 0.0))
        x = res.x[:n]
        dist = float(np.abs(x - x0).max() if norm == "linf" else np.abs(x - x0).sum())
        return MilpResult(dist, x, target, "time", max(min(lower, dist), 0.0))
    x = res.x[:n]
    dist = float(np.abs(x - x0).max() if norm == "linf" else np.abs(x - x0).sum())
    return MilpResult(dist, x, target, "optimal", dist)


@dataclass(frozen=True)
class Refutation:
    status: str  # proven (no x in the box has every row <= goal) | violation | time
    x: np.ndarray | None = None  # violation: the solver's point (for the caller to check on the model)


def find_violation(layers: list[tuple[np.ndarray, np.ndarray]], pre: list[tuple[np.ndarray, np.ndarray]],
                   box_lo: np.ndarray, box_hi: np.ndarray, rows: np.ndarray, offsets: np.ndarray, goal: float,
                   time_limit: float, cut_rounds: int | None = None) -> Refutation:
    """Whether some x in [box_lo, box_hi] has rows @ y(x) + offsets <= goal in every row (``rows``
    (k, outputs); y the last layer's output), as a feasibility MILP: the big-M encoding with the
    pre-activation bounds ``pre`` (sound on the box, e.g. alpha-CROWN's), one variable t >= every
    row, minimising t with the goal as HiGHS's objective bound. Infeasible: proven, no such x.
    Feasible: the solver's x, a candidate that the caller must confirm on the model. The bound
    lets HiGHS prune every node whose relaxation is above the goal instead of closing the gap to
    the optimum: on mnist_fc 256x4 prop_8 eps 0.03 one row took 7.9 s with t capped at the goal
    and did not finish in 100 s minimising.
    Before the MILP, ``cut_rounds`` (CUT_ROUNDS) rounds of Anderson cuts at the LP relaxation's
    solution tighten its relaxation; a relaxation with no point at all proves the box already.
    The MILP runs in HiGHS through highspy, with REFUTING_OPTIONS."""
    import highspy

    started = time.perf_counter()
    n = box_lo.size
    w, b = layers[-1]
    net = _Network(layers[:-1], pre, box_lo, box_hi, extra=1)
    t = n  # the objective's variable, right after x
    net.var_lo[t], net.var_hi[t] = -np.inf, goal
    # rows @ (W a + b) + offsets - t <= 0
    net.rows.affine(rows @ w, net.last, np.full(len(rows), t), -1.0, -np.inf, -(rows @ b + offsets))
    A, lbs, ubs = net.rows.matrix()
    c = np.zeros(net.nv)
    c[t] = 1.0
    tightened = net.with_cuts(c, A, lbs, ubs, CUT_ROUNDS if cut_rounds is None else cut_rounds,
                              started + 0.5 * time_limit)
    if tightened is None:
        return Refutation("proven")
    A, lbs, ubs = tightened
    left = time_limit - (time.perf_counter() - started)
    # the MILP itself takes the goal as HiGHS's objective bound instead of t's upper bound: a
    # node's dual simplex then stops once its objective passes the goal, where with the cap it
    # had to go on until its LP showed itself infeasible (256x4 prop_7 eps 0.05, rows 1 and 7:
    # 39 -> 22 s and 133 -> 58 s, with about as many nodes)
    net.var_hi[t] = np.inf  # the cut rounds' LPs above keep the cap: one with no point proves the box
    h = _highs_model(c, A, lbs, ubs, net.var_lo, net.var_hi, net.integrality)
    for option, value in REFUTING_OPTIONS.items():
        h.setOptionValue(option, value)
    h.setOptionValue("objective_bound", goal)
    h.setOptionValue("time_limit", max(left, 0.01))  # a fresh model: its clock starts now
    if h.run() == highspy.HighsStatus.kError:
        raise RuntimeError("HiGHS could not solve the MILP")
    info = h.getInfo()
    # no point below the bound, or HiGHS's proved lower bound on t above the goal (the bound
    # prunes nodes; it does not keep HiGHS from reporting an optimum above it)
    if h.getModelStatus() == highspy.HighsModelStatus.kInfeasible or info.mip_dual_bound > goal:
        return Refutation("proven")
    if info.primal_solution_status == highspy.SolutionStatus.kSolutionStatusFeasible \
            and info.objective_function_value <= goal:
        x = np.asarray(h.getSolution().col_value)[:n]
        return Refutation("violation", np.clip(x, box_lo, box_hi))
    return Refutation("time")


# HiGHS's options for ``find_violation``'s MILPs. Its primal heuristics (sub-MIPs such as RINS
# and RENS, feasibility jump, reduced-cost fixing at the root) look for a feasible point, which
# a region that the property holds on does not have; on a row of mnist_fc 256x4 prop_0 eps 0.05
# they took 9.4 s of 14.7. Five rows of 256x4 prop_0 and prop_7 eps 0.05 (refined bounds, one
# core): 270 s with scipy's milp and its defaults, 243 s with these (2-3x faster on two rows, 20%
# slower on one; docs/benchmarks.md, benchmark 12). A violation is still found by the search
# itself (every node's LP point that is integral). One thread, as every model here
# (``_quiet_highs``).
REFUTING_OPTIONS = {
    "mip_heuristic_effort": 0.0,
    "mip_heuristic_run_rins": False,
    "mip_heuristic_run_rens": False,
    "mip_heuristic_run_root_reduced_cost": False,
    "mip_heuristic_run_feasibility_jump": False,
}


def _highs_model(c: np.ndarray, A, lbs: np.ndarray, ubs: np.ndarray, var_lo: np.ndarray, var_hi: np.ndarray,
                 integrality: np.ndarray | None = None):
    """A quiet highspy.Highs holding min c @ v s.t. lbs <= A v <= ubs, var_lo <= v <= var_hi
    (A a scipy CSR matrix; +-inf for no bound), with the variables where ``integrality`` is 1
    integer."""
    import highspy

    inf = highspy.kHighsInf
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = len(c), A.shape[0]
    lp.col_cost_ = np.asarray(c, dtype=np.float64)
    lp.col_lower_ = np.where(np.isinf(var_lo), -inf, var_lo)
    lp.col_upper_ = np.where(np.isinf(var_hi), inf, var_hi)
    lp.row_lower_ = np.where(np.isinf(lbs), -inf, lbs)
    lp.row_upper_ = np.where(np.isinf(ubs), inf, ubs)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
    lp.a_matrix_.num_col_, lp.a_matrix_.num_row_ = len(c), A.shape[0]
    lp.a_matrix_.start_, lp.a_matrix_.index_, lp.a_matrix_.value_ = A.indptr, A.indices, A.data
    if integrality is not None:
        lp.integrality_ = [highspy.HighsVarType.kInteger if v else highspy.HighsVarType.kContinuous
                           for v in integrality]
    h = _quiet_highs()
    h.passModel(lp)
    return h


def relaxation_minimiser(layers: list[tuple[np.ndarray, np.ndarray]], pre: list[tuple[np.ndarray, np.ndarray]],
                         box_lo: np.ndarray, box_hi: np.ndarray, rows: np.ndarray, offsets: np.ndarray,
                         time_limit: float, method: str = "ipm") -> list[np.ndarray] | None:
    """Where the big-M encoding's LP relaxation (binaries relaxed to [0, 1]) minimises the
    largest of ``rows @ y(x) + offsets`` over the box (as ``find_violation``, without the cap):
    the values of every layer's inputs there, [x, a_1, ..., a_{K-1}], or None when the LP did not
    finish in ``time_limit`` seconds. A point of the relaxation, not of the network: where
    ``hull.facets_at`` finds the facets that tighten the relaxation most. ``method``: "ipm",
    HiGHS's interior point without crossover (an optimal point, not necessarily a vertex; far
    faster on a CNN's large sparse LP), or "simplex", HiGHS's default."""
    import highspy

    n = box_lo.size
    w, b = layers[-1]
    net = _Network(layers[:-1], pre, box_lo, box_hi, extra=1)
    net.var_lo[n], net.var_hi[n] = -np.inf, np.inf
    net.rows.affine(rows @ w, net.last, np.full(len(rows), n), -1.0, -np.inf, -(rows @ b + offsets))
    A, lbs, ubs = net.rows.matrix()
    c = np.zeros(net.nv)
    c[n] = 1.0
    h = _highs_model(c, A, lbs, ubs, net.var_lo, net.var_hi)
    h.setOptionValue("time_limit", max(time_limit, 0.01))
    if method == "ipm":  # an optimal point, not a vertex: facets hold anywhere, any minimiser serves
        h.setOptionValue("solver", "ipm")
        h.setOptionValue("run_crossover", "off")
    elif method != "simplex":
        raise ValueError(f"relaxation_minimiser: method {method!r} is not 'ipm' or 'simplex'")
    h.run()
    if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        return None
    x = np.asarray(h.getSolution().col_value)
    return [x[layer[2]] for layer in net.layers]


class RelaxationLP:
    """The LP relaxation of the big-M encoding of ``hidden`` layers over the box (a triangle per
    unstable ReLU, as ``relaxation_minimiser``), built once in HiGHS (highspy) for many linear
    objectives on the last layer's activations: each solve starts from the previous one's optimal
    basis, which stays primal feasible when only the objective changes. mnist_fc 256x4 prop_0
    eps 0.05, 20 neurons of the last hidden layer: 0.37 s against 2.84 s for a fresh scipy LP each
    (the same minima to 1e-12)."""

    def __init__(self, hidden: list[tuple[np.ndarray, np.ndarray]], pre: list[tuple[np.ndarray, np.ndarray]],
                 box_lo: np.ndarray, box_hi: np.ndarray):
        import highspy

        net = _Network(hidden, pre, box_lo, box_hi)
        A, lbs, ubs = net.rows.matrix()
        self._highs = _highs_model(np.zeros(net.nv), A, lbs, ubs, net.var_lo, net.var_hi)
        self._optimal = highspy.HighsModelStatus.kOptimal
        self._last = net.last.astype(np.int32)
        self._inputs = [layer[2] for layer in net.layers]

    def minimiser(self, c: np.ndarray, time_limit: float) -> list[np.ndarray] | None:
        """Where the relaxation minimises ``c @ a_H`` (the last of H hidden layers' activations):
        the values of every hidden layer's input there, [x, a_1, ..., a_{H-1}], or None when the
        solve did not finish optimal within ``time_limit`` seconds."""
        h = self._highs
        started = time.perf_counter()
        # HiGHS's time limit counts from the object's first run: give each solve its own
        h.setOptionValue("time_limit", h.getRunTime() + max(time_limit, 0.01))
        h.changeColsCost(len(self._last), self._last, np.asarray(c, dtype=np.float64))
        h.run()
        left = time_limit - (time.perf_counter() - started)
        if h.getModelStatus() != self._optimal and left > 0:
            # a warm start HiGHS could not finish from (status Unknown, seen on mnist_fc 256x4's
            # last layer after ~100 solves): once more from scratch, which ends optimal there
            h.clearSolver()
            h.setOptionValue("time_limit", h.getRunTime() + max(left, 0.01))
            h.run()
        if h.getModelStatus() != self._optimal:
            return None
        x = np.asarray(h.getSolution().col_value)
        return [x[cols] for cols in self._inputs]


def relaxation_minimisers(hidden: list[tuple[np.ndarray, np.ndarray]], pre: list[tuple[np.ndarray, np.ndarray]],
                          box_lo: np.ndarray, box_hi: np.ndarray, objectives: np.ndarray,
                          time_limit: float) -> list[list[np.ndarray]] | None:
    """``RelaxationLP.minimiser`` of each row of ``objectives`` in turn on one LP, each solve
    warm-started from the last, within ``time_limit`` seconds in all: the points, or None when
    one did not finish (a function of plain arrays, for ``solvers.forked``'s processes)."""
    deadline = time.perf_counter() + time_limit
    lp = RelaxationLP(hidden, pre, box_lo, box_hi)
    points = []
    for c in objectives:
        left = deadline - time.perf_counter()
        xs = None if left <= 0 else lp.minimiser(c, left)
        if xs is None:
            return None
        points.append(xs)
    return points


_HIGHS_GREETED = False


def _quiet_highs():
    """A highspy.Highs with its log off. The first one a process makes prints HiGHS's banner
    on file descriptor 1 before any option can be set, which would corrupt a JSON report on
    stdout: that construction runs with descriptor 1 on /dev/null."""
    import highspy

    global _HIGHS_GREETED
    if _HIGHS_GREETED:
        h = highspy.Highs()
    else:
        sys.stdout.flush()
        saved, null = os.dup(1), os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, 1)
            h = highspy.Highs()
        finally:
            os.dup2(saved, 1)
            os.close(saved)
            os.close(null)
        _HIGHS_GREETED = True
    h.setOptionValue("output_flag", False)
    # one thread, in every model: HiGHS starts one pool of worker threads per process at its
    # first solve and keeps it; a process forked after that (``solvers.forked``) inherits the pool
    # without its threads, and a MILP there that hands work to it waits for ever. With one thread
    # there is no pool to inherit (and a later model that asked for more would fail to run). The
    # parallelism is the processes': one solver per core
    h.setOptionValue("threads", 1)
    return h


def layers_of(module) -> list[tuple[np.ndarray, np.ndarray]]:
    """(W, b) of the Linear layers of an nn.Sequential of Linear/ReLU (Flatten allowed)."""
    import torch

    out = [(m.weight.detach().double().numpy(), m.bias.detach().double().numpy())
           for m in module.modules() if isinstance(m, torch.nn.Linear)]
    return out


class _Network:
    """The big-M encoding of hidden layers a_k = ReLU(W_k a_{k-1} + b_k) over the box [lo, hi],
    with pre-activation bounds ``pre`` (sound on the box): variables x (n) | ``extra`` (the
    caller's) | per layer a (h) then d (h), one binary d per unstable ReLU (a stable one's is
    fixed). ``last``: the variables of the last layer's activations (x without layers)."""

    def __init__(self, hidden, pre, box_lo, box_hi, extra: int = 0):
        n = box_lo.size
        offsets, pos = [], n + extra
        for w, _ in hidden:
            offsets.append((pos, pos + w.shape[0]))
            pos += 2 * w.shape[0]
        self.nv = pos
        self.rows = rows = _Rows(pos)
        self.var_lo, self.var_hi, self.integrality = np.zeros(pos), np.full(pos, np.inf), np.zeros(pos)
        self.var_lo[:n], self.var_hi[:n] = box_lo, box_hi
        prev = np.arange(n)
        prev_lo, prev_hi = self.var_lo[:n], self.var_hi[:n]
        self.layers = []  # per layer: (w, b, prev, prev_lo, prev_hi, a, d, unstable), for ``anderson_cuts``
        for k, (w, b) in enumerate(hidden):
            a_off, d_off = offsets[k]
            z_lo, z_hi = pre[k]
            h = w.shape[0]
            a = a_off + np.arange(h)
            d = d_off + np.arange(h)
            live = z_hi > 0  # the others: a_j = 0 by its bounds (its upper bound below)
            active, unstable = live & (z_lo >= 0), live & (z_lo < 0)
            # a_j >= z_j:  W_j a_prev - a_j <= -b_j; and where z_j >= 0 on the whole box, a_j = z_j
            rows.affine(w[live], prev, a[live], -1.0, np.where(active[live], -b[live], -np.inf), -b[live])
            # a_j <= z_j - L (1 - d_j):  -W_j a_prev + a_j - L d_j <= b_j - L
            un = unstable
            rows.affine(-w[un], prev, a[un], 1.0, -np.inf, b[un] - z_lo[un], extra=(d[un], -z_lo[un]))
            rows.add(a[un], d[un], 1.0, -z_hi[un], -np.inf, 0.0)  # a_j <= U d_j
            self.var_hi[a] = np.maximum(z_hi, 0)
            self.var_hi[d] = unstable  # the stable ones' d: fixed at 0, unused
            self.integrality[d] = 1
            self.layers.append((w, b, prev, prev_lo, prev_hi, a, d, np.nonzero(unstable)[0]))
            # the activations' box for the next layer's cuts: the variables' bounds [0, max(u, 0)].
            # [max(l, 0), max(u, 0)] holds too and is tighter for the active neurons, but it
            # chose cuts that slowed the MILPs: 256x2 prop_10 eps 0.05's nine rows 21 s against 12 s
            prev, prev_lo, prev_hi = a, np.zeros(h), self.var_hi[a]
        self.last = prev

    def with_cuts(self, c: np.ndarray, A, lbs: np.ndarray, ubs: np.ndarray, rounds: int, deadline: float):
        """The rows (A, lbs, ubs) of this encoding with ``rounds`` rounds of ``anderson_cuts`` at
        the LP relaxation's minimiser of ``c`` added (fewer when the LPs reach ``deadline`` or a
        round finds none), or None when the relaxation has no point (then neither has the MILP)."""
        bounds = Bounds(self.var_lo, self.var_hi)
        for _ in range(rounds):
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            lp = milp(c, constraints=LinearConstraint(A, lbs, ubs), bounds=bounds, options={"time_limit": left})
            if lp.status == 2:
                return None
            cuts = None if lp.status != 0 or lp.x is None else self.anderson_cuts(lp.x)
            if cuts is None:
                break
            A = vstack([A, cuts[0]]).tocsr()
            lbs, ubs = np.concatenate([lbs, np.full(len(cuts[1]), -np.inf)]), np.concatenate([ubs, cuts[1]])
        return A, lbs, ubs

    def anderson_cuts(self, v: np.ndarray, tol: float = 1e-4):
        """The inequalities of Anderson et al. (2020, "Strong mixed-integer programming formulations
        for trained neural networks") that the point ``v`` (an LP relaxation's solution) violates
        by more than ``tol``: the most violated one per unstable neuron. For a = ReLU(w p + b)
        with p in the box [L, U] (the input box, or the previous layer's activations' bounds)
        and its binary d, and any
        subset I of the inputs, with L'_i, U'_i the bounds at which w_i p_i is least and greatest:

            a <= sum_{i in I} w_i (p_i - L'_i (1 - d)) + (b + sum_{i not in I} w_i U'_i) d

        Together they describe the convex hull of the neuron over its input box, which the big-M
        rows (a triangle per neuron) do not: valid for every integer point of the encoding (d = 1:
        a = w p + b, the right side is at least that; d = 0: a = 0, the right side is at least 0),
        so the MILP keeps its solutions and its relaxation tightens. The most violated subset at
        v takes i where w_i (p_i - L'_i (1 - d)) < w_i U'_i d. Each right side is loosened by
        1e-9 of its terms' magnitude (float64 rounding). Returns (coo rows, upper bounds) or None."""
        rows, cols, vals, ubs, count = [], [], [], [], 0
        for w, b, prev, p_lo, p_hi, a, d, un in self.layers:
            if not len(un) or not (np.isfinite(p_lo).all() and np.isfinite(p_hi).all()):
                continue
            W = w[un]
            lo_t = np.where(W >= 0, p_lo, p_hi)  # L'
            hi_t = np.where(W >= 0, p_hi, p_lo)  # U'
            dz = v[d[un]][:, None]
            inside = W * (v[prev] - lo_t * (1 - dz))
            outside = W * hi_t * dz
            pick = inside < outside
            rhs = np.where(pick, inside, outside).sum(1) + b[un] * dz[:, 0]
            for r in np.nonzero(v[a[un]] - rhs > tol)[0]:
                j, sel = un[r], pick[r]
                wl = W[r, sel] @ lo_t[r, sel]
                d_coef = -(wl + b[j] + W[r, ~sel] @ hi_t[r, ~sel])
                # a_j - sum_I w_i p_i + d_coef d_j <= -sum_I w_i L'_i
                c = np.concatenate([[a[j]], prev[sel], [d[j]]])
                rows.append(np.full(len(c), count))
                cols.append(c)
                vals.append(np.concatenate([[1.0], -W[r, sel], [d_coef]]))
                scale = np.abs(W[r] * lo_t[r]).sum() + np.abs(W[r] * hi_t[r]).sum() + abs(b[j])
                ubs.append(-wl + 1e-9 * (1.0 + scale))
                count += 1
        if not count:
            return None
        return coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                          shape=(count, self.nv)), np.array(ubs)


class _Rows:
    """The MILP's constraint rows lo <= A v <= hi, gathered as coordinate arrays (vectorised over
    a layer's neurons; writing a sparse matrix entry by entry dominated small problems)."""

    def __init__(self, nv: int):
        self.nv, self.count = nv, 0
        self.r, self.c, self.v, self.lo, self.hi = [], [], [], [], []

    def _rows(self, m: int, lo, hi) -> np.ndarray:
        ids = self.count + np.arange(m)
        self.count += m
        self.lo.append(np.broadcast_to(np.asarray(lo, dtype=np.float64), (m,)))
        self.hi.append(np.broadcast_to(np.asarray(hi, dtype=np.float64), (m,)))
        return ids

    def add(self, col1, col2, v1, v2, lo, hi) -> None:
        """One row per entry: v1 * var[col1] + v2 * var[col2]."""
        m = len(col1)
        ids = self._rows(m, lo, hi)
        self.r += [ids, ids]
        self.c += [np.asarray(col1), np.asarray(col2)]
        self.v += [np.broadcast_to(np.asarray(v1, dtype=np.float64), (m,)),
                   np.broadcast_to(np.asarray(v2, dtype=np.float64), (m,))]

    def affine(self, w: np.ndarray, prev: np.ndarray, own, own_coef: float, lo, hi, extra=None) -> None:
        """One row per row of ``w``: w @ var[prev] (+ own_coef * var[own]) (+ coef * var[col])."""
        m = w.shape[0]
        if m == 0:
            return
        ids = self._rows(m, lo, hi)
        rr, cc = np.nonzero(w)
        self.r.append(ids[rr]); self.c.append(prev[cc]); self.v.append(w[rr, cc])
        if own is not None:
            self.r.append(ids); self.c.append(np.asarray(own)); self.v.append(np.full(m, own_coef))
        if extra is not None:
            self.r.append(ids); self.c.append(np.asarray(extra[0])); self.v.append(np.asarray(extra[1], dtype=np.float64))

    def matrix(self):
        A = coo_matrix((np.concatenate(self.v), (np.concatenate(self.r), np.concatenate(self.c))),
                       shape=(self.count, self.nv)).tocsr()
        return A, np.concatenate(self.lo), np.concatenate(self.hi)
