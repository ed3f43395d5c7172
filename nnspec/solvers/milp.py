"""Exact minimal adversarial distance of a ReLU MLP by mixed-integer linear programming.

For layers y = W_k a + b_k with ReLU between them, centre x0, label l and target t, solve

    min  ||x - x0||_p        (p = inf: one variable r >= |x_i - x0_i|; p = 1: sum of e_i >= |x_i - x0_i|)
    s.t. lo <= x <= hi, |x - x0|_inf <= R,
         a = ReLU(W a_prev + b) by the big-M encoding with interval bounds,
         y_l - y_t <= -slack

with scipy's HiGHS. Minimising over targets gives the untargeted distance. The result is exact up
to the solver's tolerances: it is the known answer that the search backends are measured against.
Only small networks are practical (one binary per unstable ReLU).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import lil_matrix


@dataclass(frozen=True)
class MilpResult:
    distance: float  # inf when no violation exists within R; the best found when the time ran out
    x: np.ndarray | None
    target: int | None
    status: str  # optimal | infeasible | time
    lower: float = math.nan  # a proved lower bound of the distance (= distance when optimal)


def _interval(layers, lo, hi):
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
                 anytime: bool = False, pre_bounds=None) -> MilpResult:
    """Exact minimal distance to an input where logit ``target`` >= logit ``label`` (+ slack).

    ``layers``: [(W, b), ...] with ReLU after every layer but the last. ``target`` None: any label.
    ``anytime``: when the time runs out, return the solver's proved lower bound (``lower``) instead
    of raising. ``pre_bounds``: a function (box_lo, box_hi) -> [(z_lo, z_hi), ...] of sound
    pre-activation bounds tighter than intervals (CROWN's), for smaller big-M constants.
    """
    if target is None and anytime:
        y = np.asarray(x0, dtype=np.float64).reshape(-1)
        for w, b in layers[:-1]:
            y = np.maximum(w @ y + b, 0)
        logits = layers[-1][0] @ y + layers[-1][1]
        best, lower, started = MilpResult(math.inf, None, None, "infeasible", math.inf), math.inf, time.perf_counter()
        for t in np.argsort(-logits):
            if t == label:
                continue
            left = time_limit - (time.perf_counter() - started)
            if left <= 0:
                return MilpResult(best.distance, best.x, best.target, "time", 0.0)
            radius = min(max_radius, best.distance * (1 + 1e-6) + 1e-9)
            r = min_distance(layers, x0, label, int(t), norm, lo, hi, radius, slack, left, True, pre_bounds)
            lower = min(lower, r.lower if r.status != "infeasible" else radius)
            if r.distance < best.distance:
                best = r
        status = "optimal" if lower >= best.distance * (1 - 1e-9) else "time"
        return MilpResult(best.distance, best.x, best.target, status if math.isfinite(best.distance) else
                          ("infeasible" if lower >= max_radius else "time"), min(lower, best.distance))
    if target is None:
        # most likely runner-up first; every solution then tightens the box (and so the big-M
        # bounds) of the targets that follow, since the minimum can only be smaller
        best = MilpResult(math.inf, None, None, "infeasible")
        y = np.asarray(x0, dtype=np.float64).reshape(-1)
        for w, b in layers[:-1]:
            y = np.maximum(w @ y + b, 0)
        logits = layers[-1][0] @ y + layers[-1][1]
        for t in np.argsort(-logits):
            if t != label:
                radius = min(max_radius, best.distance * (1 + 1e-6) + 1e-9)
                r = min_distance(layers, x0, label, int(t), norm, lo, hi, radius, slack, time_limit)
                if r.distance < best.distance:
                    best = r
        return best
    if norm not in ("linf", "l1"):
        raise ValueError("the MILP handles linf and l1 (l2 would need a quadratic objective)")
    x0 = np.asarray(x0, dtype=np.float64).reshape(-1)
    n = x0.size
    box_lo = np.maximum(np.broadcast_to(lo, n), x0 - max_radius)
    box_hi = np.minimum(np.broadcast_to(hi, n), x0 + max_radius)
    pre = _interval(layers, box_lo, box_hi)
    if pre_bounds is not None:  # tighter sound bounds: intersect
        pre = [(np.maximum(a, c), np.minimum(b, d)) for (a, b), (c, d) in zip(pre, pre_bounds(box_lo, box_hi))]
    hidden = layers[:-1]
    # variable layout: x (n) | r (1 for linf, n for l1) | per hidden layer: a (h) then d (h)
    nr = 1 if norm == "linf" else n
    offsets, pos = [], n + nr
    for w, _ in hidden:
        h = w.shape[0]
        offsets.append((pos, pos + h))
        pos += 2 * h
    nv = pos
    rows, lbs, ubs = [], [], []

    def row():
        r = lil_matrix((1, nv))
        rows.append(r)
        return r

    for i in range(n):  # |x_i - x0_i| <= r (or r_i)
        ri = n if norm == "linf" else n + i
        a = row(); a[0, i] = 1; a[0, ri] = -1; lbs.append(-np.inf); ubs.append(x0[i])
        a = row(); a[0, i] = -1; a[0, ri] = -1; lbs.append(-np.inf); ubs.append(-x0[i])
    prev = list(range(n))
    for k, (w, b) in enumerate(hidden):
        a_off, d_off = offsets[k]
        z_lo, z_hi = pre[k]
        for j in range(w.shape[0]):
            aj, dj = a_off + j, d_off + j
            # a_j >= z_j  ->  W_j a_prev - a_j <= -b_j
            r = row(); [r.__setitem__((0, p), w[j, q]) for q, p in enumerate(prev)]; r[0, aj] = -1
            lbs.append(-np.inf); ubs.append(-b[j])
            if z_hi[j] <= 0:
                continue  # a_j = 0 by its bounds
            if z_lo[j] >= 0:  # a_j <= z_j
                r = row(); [r.__setitem__((0, p), -w[j, q]) for q, p in enumerate(prev)]; r[0, aj] = 1
                lbs.append(-np.inf); ubs.append(b[j])
                continue
            # a_j <= z_j - L (1 - d_j)  ->  a_j - W_j a_prev - L d_j <= b_j - L
            r = row(); [r.__setitem__((0, p), -w[j, q]) for q, p in enumerate(prev)]
            r[0, aj] = 1; r[0, dj] = -z_lo[j]; lbs.append(-np.inf); ubs.append(b[j] - z_lo[j])
            # a_j <= U d_j
            r = row(); r[0, aj] = 1; r[0, dj] = -z_hi[j]; lbs.append(-np.inf); ubs.append(0.0)
        prev = list(range(a_off, a_off + w.shape[0]))
    w, b = layers[-1]
    r = row()  # y_label - y_target <= -slack
    for q, p in enumerate(prev):
        r[0, p] = w[label, q] - w[target, q]
    lbs.append(-np.inf); ubs.append(-slack - (b[label] - b[target]))
    A = lil_matrix((len(rows), nv))
    for i, rr in enumerate(rows):
        A[i] = rr
    var_lo, var_hi = np.zeros(nv), np.full(nv, np.inf)
    var_lo[:n], var_hi[:n] = box_lo, box_hi
    integrality = np.zeros(nv)
    for k, (wk, _) in enumerate(hidden):
        a_off, d_off = offsets[k]
        z_lo, z_hi = pre[k]
        var_hi[a_off:a_off + wk.shape[0]] = np.maximum(z_hi, 0)
        var_hi[d_off:d_off + wk.shape[0]] = 1
        integrality[d_off:d_off + wk.shape[0]] = 1
    c = np.zeros(nv)
    c[n:n + nr] = 1
    res = milp(c, constraints=LinearConstraint(A.tocsr(), lbs, ubs), bounds=Bounds(var_lo, var_hi),
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


def layers_of(module) -> list[tuple[np.ndarray, np.ndarray]]:
    """(W, b) of the Linear layers of an nn.Sequential of Linear/ReLU (Flatten allowed)."""
    import torch

    out = [(m.weight.detach().double().numpy(), m.bias.detach().double().numpy())
           for m in module.modules() if isinstance(m, torch.nn.Linear)]
    return out
