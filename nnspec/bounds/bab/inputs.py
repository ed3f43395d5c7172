"""Input splitting's bounds (forward linear bounds, CROWN, a few alpha-CROWN steps, each only
where the cheaper one did not prove the box), groups of rows bounded jointly, the choice of cut,
and the probes that look for violations inside the boxes."""

from __future__ import annotations

import math

import torch

from nnspec.bounds.bab.domains import _deciding_row, _Domain
from nnspec.bounds.alpha import initial_alphas
from nnspec.bounds.engine import BoundEngine
from nnspec.bounds.relax import concretise
from nnspec.bounds.radius import reduce_rows

CUT_TOL = 0.03  # input cuts: worse-child gains below this share of the parent's distance to the goal tie
# input splitting past FORWARD_DIMS inputs: CROWN intermediate bounds every REFRESH splits, else the parent's
REFRESH = 3


def _reuses(d: _Domain) -> bool:
    """Whether an input-split subdomain is bounded with its parent's intermediate bounds
    (intersected with its own intervals) instead of a fresh CROWN pass: every level but each
    REFRESH-th."""
    return d.prior is not None and d.depth % REFRESH != 0


def _bound_reusing(engine: BoundEngine, domains: list[_Domain], C: torch.Tensor, rows=(None, None), goal=None):
    """``_bound`` with the subdomains that carry their parent's bounds (and are not due for a
    refresh) bounded apart, reusing those bounds; results in the order of ``domains``."""
    reuse = [i for i, d in enumerate(domains) if _reuses(d)]
    if domains[0].lo.numel() <= FORWARD_DIMS or not reuse or len(reuse) == len(domains):
        return _bound(engine, domains, C, rows, goal)
    reused = set(reuse)
    fresh = [i for i in range(len(domains)) if i not in reused]
    parts = [(idx, _bound(engine, [domains[i] for i in idx], C, rows)) for idx in (reuse, fresh)]
    order = torch.argsort(torch.tensor(reuse + fresh))
    bounds = torch.cat([p[1][0] for p in parts])[order]
    empty = torch.cat([p[1][2] for p in parts])[order]
    keys = set(parts[0][1][1]) & set(parts[1][1][1])
    records = {k: torch.cat([parts[0][1][1][k], parts[1][1][1][k]])[order] for k in keys}
    return bounds, records, empty


def _bound(engine: BoundEngine, domains: list[_Domain], C: torch.Tensor, rows=(None, None), goal=None):
    """Bounds (min over rows, or over groups of rows: ``reduce_rows``, tightened by
    ``joint_groups``) of a batch of boxes (input splitting), the coefficients reaching each
    nonlinearity and the input for the deciding row (the best row of the worst group), and which
    subdomains are empty (none: boxes are not). See ``_input_bounds`` for the bounds."""
    lo = torch.stack([d.lo for d in domains])
    hi = torch.stack([d.hi for d in domains])
    offsets, groups = rows
    B = len(domains)
    out = engine.graph.output
    A0 = C[None].expand(B, -1, -1).reshape((B, C.shape[0]) + engine.by_name[out].shape)
    with torch.no_grad():
        if lo[0].numel() <= FORWARD_DIMS:
            bounds, alphas, best = _input_bounds(engine, domains, lo, hi, A0, rows, goal)
        else:
            bounds = engine.intervals(lo, hi, "crown", prior=_priors(domains) if all(map(_reuses, domains)) else None)
            alphas, best = None, None
        record: dict[str, torch.Tensor] = {}
        low = engine.backward(out, A0, bounds, alphas=alphas, record=record)
        worst = _deciding_row(low, offsets, groups)
        rows = {name: a[torch.arange(B), worst] for name, a in record.items()}  # (B, *shape)
        if "input" in record and record["input"][0].numel() <= 4096:  # every row's linear bound, for _lp_points
            a_in = record["input"].flatten(2)
            rows["lin:a"] = a_in
            rows["lin:b"] = low - concretise(record["input"], lo, hi)
        extra = {f"bounds:{n}": torch.stack([bounds[n][0], bounds[n][1]], 1)
                 for n in (op.inputs[0] for op in engine.ops if op.kind in ("relu", "leaky_relu"))}
        if alphas is not None:  # the objective's final slopes: the children's warm start
            extra |= {f"alpha:{n}": a for n, a in alphas.items()}
    value = reduce_rows(low if best is None else torch.maximum(low, best), offsets, groups)
    if "lin:a" in rows and groups is not None:
        value = torch.maximum(value, joint_groups(rows["lin:a"], rows["lin:b"], lo.flatten(1), hi.flatten(1),
                                                  offsets, groups))
    return value, rows | extra, torch.zeros(B, dtype=torch.bool)


FORWARD_DIMS = 64  # input splitting: up to this many input dimensions, bounds start from forward ones
INPUT_ALPHA_STEPS = 3  # input splitting: alpha-CROWN steps (the objective's slopes) on boxes still open


def _priors(domains: list[_Domain]) -> dict | None:
    """The parents' bounds that every one of ``domains`` carries, stacked (B, *shape) each."""
    if not all(d.prior for d in domains):
        return None
    keys = set.intersection(*(set(d.prior) for d in domains))
    return {n: (torch.stack([d.prior[n][0] for d in domains]), torch.stack([d.prior[n][1] for d in domains]))
            for n in keys} or None


def _input_bounds(engine: BoundEngine, domains, lo, hi, A0, rows, goal):
    """Input splitting's bounds of the nonlinearity inputs over a batch of boxes, each spent
    only where the cheaper one did not prove the box: forward linear bounds intersected with the
    parent's (every box); then, for the boxes still open, a pass that also tightens each layer
    by CROWN (``forward+crown``); then, for those still open, alpha-CROWN's slopes for the
    objective (``INPUT_ALPHA_STEPS``) on those bounds. Returns the bounds, the final slopes
    (B, S, *shape) per ReLU (CROWN's own where not optimised) or None, and the best row bounds
    (B, S) alpha-CROWN saw (-inf where it did not run) or None."""
    offsets, groups = rows
    out = engine.graph.output
    prior = _priors(domains)
    bounds = engine.intervals(lo, hi, "forward", prior=prior)
    if goal is None:
        return bounds, None, None

    def still_open(bounds, idx, alphas=None):
        value = reduce_rows(engine.backward(out, A0[idx], {n: (l[idx], u[idx]) for n, (l, u) in bounds.items()},
                                            alphas=alphas), offsets, groups)
        return idx[value <= goal]

    idx = still_open(bounds, torch.arange(len(domains)))
    if not len(idx):
        return bounds, None, None
    sub = engine.intervals(lo[idx], hi[idx], "forward+crown",
                           prior=None if prior is None else {n: (l[idx], u[idx]) for n, (l, u) in prior.items()})
    for n, (l, u) in sub.items():
        bl, bu = bounds[n][0].clone(), bounds[n][1].clone()
        bl[idx], bu[idx] = l, u
        bounds[n] = (bl, bu)
    idx = still_open(bounds, idx)
    if not len(idx) or not INPUT_ALPHA_STEPS:
        return bounds, None, None
    alphas = {n: a.detach() for n, a in initial_alphas(engine, bounds, len(domains), A0.shape[1], out).items()}
    if not alphas:
        return bounds, None, None
    for n, a in alphas.items():  # warm starts: the parent's final slopes, where it kept them
        have = [int(i) for i in idx if domains[int(i)].alphas is not None and n in domains[int(i)].alphas]
        if have:
            a[have] = torch.stack([domains[i].alphas[n] for i in have]).to(a.dtype)
    sub_bounds = {n: (l[idx], u[idx]) for n, (l, u) in bounds.items()}
    with torch.enable_grad():
        opt = engine.optimise(lo[idx], hi[idx], A0[idx].flatten(2), steps=INPUT_ALPHA_STEPS, bounds=sub_bounds,
                              joint=False, start={n: a[idx] for n, a in alphas.items()})
    for n, a in opt.alphas.items():
        alphas[n][idx] = a
    best = torch.full(A0.shape[:2], -math.inf, dtype=torch.float64)
    best[idx] = opt.lower
    return bounds, alphas, best


JOINT_STEPS = 16  # exponentiated-gradient steps on each group's row weights (see joint_groups)


def joint_groups(a: torch.Tensor, b: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, offsets, groups,
                 steps: int = JOINT_STEPS) -> torch.Tensor:
    """(B,) a lower bound of min over groups of max over a group's rows of y_i + offset_i on each
    box, from the rows' linear lower bounds y_i(x) >= a_i x + b_i there (a (B, S, n), b (B, S); lo,
    hi (B, n)), at least as high as the max of the rows' own minima (``reduce_rows``).

    The max over a group's rows is >= any convex combination of them, so for weights lam on the
    simplex min_x max_i (a_i x + b_i + offset_i) >= sum_i lam_i (b_i + offset_i) + min_x (sum_i lam_i
    a_i) x, each term minimised over the box in closed form (the dual of the linear program min t,
    t >= a_i x + b_i + offset_i); equality at the best weights. One row's minimum can sit at a
    vertex where another row is high: a property that needs all of y0 <= y1..y4 (ACAS Xu's
    properties 2, 3, 4, 6, 7) is refuted on a box where no single row is positive everywhere but
    every point has one. The weights start uniform and follow exponentiated gradient steps; every
    iterate is a bound, the best is kept, and each row alone (the max of the minima) is a candidate."""
    c = b + (0 if offsets is None else offsets.to(b).view(1, -1))
    low = c + concretise(a, lo, hi)
    groups = groups.view(-1)
    out = []
    for g in torch.unique(groups).tolist():
        sel = (groups == g).nonzero().flatten()
        best = low[:, sel].max(1).values
        k = len(sel)
        if k > 1:
            A, cg = a[:, sel], c[:, sel]  # (B, k, n), (B, k)
            lam = torch.full_like(cg, 1.0 / k)
            for t in range(steps):
                w = (lam.unsqueeze(2) * A).sum(1)  # (B, n)
                at = torch.where(w >= 0, lo, hi)  # the box's minimiser of w x
                value = (lam * cg).sum(1) + (w * at).sum(1)
                best = torch.maximum(best, value)
                grad = cg + (A * at.unsqueeze(1)).sum(2)  # each row's value there: a supergradient in lam
                spread = (grad.max(1, keepdim=True).values - grad.min(1, keepdim=True).values).clamp_min(1e-12)
                lam = lam * torch.exp((2.0 / (1 + t) ** 0.5) * (grad - grad.max(1, keepdim=True).values) / spread)
                lam = lam / lam.sum(1, keepdim=True)
        out.append(best)
    return torch.stack(out, 1).min(1).values


def _best_cuts(owners: list[int], bounds: torch.Tensor, empty: torch.Tensor, goal: float,
               cut_width: list[float], parent_bounds: list[float]) -> torch.Tensor:
    """Children (left, right pairs, grouped by parent as ``_split_input_all`` makes them; bounds at
    least their parent's, ``parent_bounds`` per pair) -> the indices of the pair per parent whose
    worse child bound is highest (a proved or empty child counts as +inf), gains below CUT_TOL
    (3%) of the parent's distance to the goal counting as ties; among those, the pair whose children
    gain most in all (capped at the goal) times the cut dimension's width relative to the root
    box; then the widest.

    The coefficient heuristic ("smear": width x |input coefficient|) is blind to dimensions that
    reach the objective only through unstable neurons whose lower relaxation is flat: on ACAS
    Xu's property 1 it cut three dimensions to zero width while the loose one (coefficient 0,
    width 0.5) was never cut, and the lower bound stalled for 100 s. Comparing the worse child
    exactly was as bad the other way: on property 3 a cut that proved a sliver and raised the
    other child by 1e-9 won every time, two dimensions went to 1e-5 of their range, and
    thousands of slivers each needed the cut (of a dimension never cut) that proves both halves
    at once. Trying every cut costs one batched bound call of 2n children instead of 2 (n <=
    SMART_DIMS)."""
    proved = empty | (bounds > goal)
    value = torch.where(proved, torch.full_like(bounds, math.inf), bounds).reshape(-1, 2)
    worse = value.min(1).values  # pair p: children 2p, 2p + 1
    capped = torch.where(proved, torch.full_like(bounds, goal), bounds).reshape(-1, 2)
    parent = torch.tensor(parent_bounds, dtype=torch.float64)
    width = torch.tensor(cut_width[::2], dtype=torch.float64)
    gain = (capped.sum(1) - 2 * parent) * width
    pair_owner = torch.tensor(owners[::2])
    keep = []
    for p in pair_owner.unique(sorted=True).tolist():
        near = (pair_owner == p).nonzero().flatten()
        best = worse[near].max()
        gap = abs(goal - float(parent[near[0]]))
        tol = CUT_TOL * gap + 1e-12 if torch.isfinite(best) else 0.0
        near = near[worse[near] >= best - tol]
        top = gain[near].max()
        near = near[gain[near] >= top - 1e-9 * (1 + top.abs())]
        chosen = int(near[int(width[near].argmax())])
        keep += [2 * chosen, 2 * chosen + 1]
    return torch.tensor(keep, dtype=torch.long)


# projected-gradient steps from the subdomains' most promising points: off by default. They never
# ran before 2026-12-03 (the points were evaluated without gradients); once fixed, 20 steps from
# the 32 lowest points per batch cost ACAS Xu 8 of its 126 unsat answers at 8 s and found no
# counterexample more at 116 s (45 of 47 against 46 without them)
PROBE_STEPS = 0
PROBE_DESCENTS = 32  # starting points (the lowest objective values of a batch) that take them
LP_PROBES = 8  # subdomains per batch (the lowest bounds) whose linear bounds' minimiser is probed


def _lp_points(domains: list[_Domain], records: dict, lo: torch.Tensor, hi: torch.Tensor, offsets, groups):
    """For an objective with groups (a violation needs every row of some group <= 0), a point per
    subdomain where the rows' linear lower bounds are jointly lowest: min t s.t. a_i x + b_i +
    offset_i <= t for the rows of the group, x in the box, solved as a linear program (HiGHS) for
    the ``LP_PROBES`` subdomains with the lowest bounds. Where no neuron of a subdomain is
    unstable the bounds are exact, so the minimiser is the subdomain's true best point: a
    violation a vertex or a gradient step would only graze. Other subdomains' points are
    starting points like any other (every point is checked exactly). None without groups (a
    single row's minimiser is a vertex, probed already) or without the coefficients."""
    if groups is None or "lin:a" not in records:
        return None
    import numpy as np
    from scipy.optimize import linprog

    A, b = records["lin:a"].numpy(), records["lin:b"].numpy()  # (B, S, n), (B, S)
    off = np.zeros(b.shape[1]) if offsets is None else offsets.double().numpy().reshape(-1)
    g = groups.numpy().reshape(-1)
    flat_lo, flat_hi = lo.flatten(1).numpy(), hi.flatten(1).numpy()
    points = ((lo + hi) / 2).flatten(1).clone()
    order = np.argsort([d.bound for d in domains])[:LP_PROBES]
    n = A.shape[2]
    for k in order:
        best, where = np.inf, None
        for group in np.unique(g):
            sel = g == group
            # variables (x, t): minimise t subject to A x - t <= -(b + offset)
            a_ub = np.hstack([A[k][sel], -np.ones((int(sel.sum()), 1))])
            res = linprog(np.r_[np.zeros(n), 1.0], A_ub=a_ub, b_ub=-(b[k][sel] + off[sel]),
                          bounds=list(zip(flat_lo[k], flat_hi[k])) + [(None, None)], method="highs")
            if res.status == 0 and res.fun < best:
                best, where = res.fun, res.x[:n]
        if where is not None:
            points[k] = torch.from_numpy(np.clip(where, flat_lo[k], flat_hi[k]))
    return points.reshape(lo.shape)


def _probe(engine: BoundEngine, domains: list[_Domain], records: dict, C, rows,
           steps: int | None = None, threshold: float = 0.0) -> tuple[torch.Tensor | None, torch.Tensor]:
    """The first point found in the subdomains where the objective is <= ``threshold``: their most promising
    points (the vertex minimising the deciding row's linear bound, the midpoint and, for groups,
    the linear bounds' joint minimiser), then ``steps`` (PROBE_STEPS) of projected gradient
    descent on the objective from the PROBE_DESCENTS lowest of them, every iterate kept inside its
    own subdomain and checked exactly (float64). Small subdomains make a local search reach
    violation regions too narrow for a search over the whole box."""
    lo = torch.stack([d.lo for d in domains])
    hi = torch.stack([d.hi for d in domains])
    coeff = records.get("input")
    starts = [(lo + hi) / 2]
    if coeff is not None:
        starts.insert(0, torch.where(coeff.reshape(lo.shape) >= 0, lo, hi))
    lp = _lp_points(domains, records, lo, hi, *rows)
    if lp is not None:
        starts.append(lp)
    x = torch.cat(starts)
    los, his = lo.repeat(len(starts), *([1] * (lo.dim() - 1))), hi.repeat(len(starts), *([1] * (lo.dim() - 1)))
    step = (his - los) / 4
    steps = PROBE_STEPS if steps is None else steps
    for k in range(steps + 1):
        last = k == steps
        x = x.detach().requires_grad_(not last)
        with torch.set_grad_enabled(not last):
            y = engine.evaluate(x).flatten(1)
            value = reduce_rows(y @ C.T, *rows)
        if k == 0:  # each subdomain's lowest value at its starting points: the dive order
            best = value.detach().view(len(starts), len(domains)).min(0).values
        bad = (value <= threshold).nonzero()
        if len(bad):
            return x.detach()[int(bad[0])], best
        if last or not value.requires_grad:
            break
        (grad,) = torch.autograd.grad(value.sum(), x)
        if k == 0 and len(x) > PROBE_DESCENTS:  # the descent from the lowest starting points only
            keep = value.detach().argsort()[:PROBE_DESCENTS]
            x, los, his, step, grad = x[keep], los[keep], his[keep], step[keep], grad[keep]
        with torch.no_grad():
            x = torch.minimum(torch.maximum(x - step * grad.sign(), los), his)
            step = step * 0.6
    return None, best
