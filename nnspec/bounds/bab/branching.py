"""Which neuron a ReLU-splitting subdomain splits: BaBSR's score (``_branching``), and filtered
smart branching over its best candidates, each child bounded by a pass (``_filtered``) or to
first order (``_estimated``, ``_child_gains``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from nnspec.bounds.bab.domains import _deciding_row
from nnspec.bounds.engine import BoundEngine
from nnspec.bounds.relax import MAX_HALVINGS, SMOOTH, cut_at_splits, relaxation, relu_parts
from nnspec.bounds.radius import reduce_rows

if TYPE_CHECKING:
    from nnspec.bounds.bab.beta import _Fixed

# branching score weights of a neuron's coefficient by sign: a negative one meets the upper
# relaxation, whose intercept the split removes (BaBSR's term); a positive one meets the lower line,
# which the split changes only in slope. 0.2 for positive ones (1.0 and 0.0 measured too): mnist_fc
# 256x4 prop_3 eps 0.05 proved with 3,919 subdomains instead of 5,491, an oval21 cifar_base
# instance with 1,223 instead of none in 60 s
SCORE_NEG, SCORE_POS = 1.0, 0.2


# a smooth neuron's score: SCORE_SMOOTH x |coefficient| x the gap between its two parallel lines
# (a line's distance from f is at most the gap, half of it on average)
SCORE_SMOOTH = 0.5
SMOOTH_MIN_GAP = 1e-7  # a smooth neuron whose lines are closer than this is not split


def _branching(engine: BoundEngine, fixed: _Fixed, coeffs: dict[str, torch.Tensor],
               splits: dict[str, torch.Tensor], k: int = 1,
               bounds: dict | None = None) -> list[list[tuple[str, int]]]:
    """Per subdomain of a batch, up to ``k`` neurons to split (their input's name, flat index),
    best first; none where no neuron is left. ReLUs: the unstable ones, by the weighted
    |coefficient| x relaxation intercept (BaBSR's score; SCORE_NEG, SCORE_POS). Smooth
    nonlinearities (``engine.halvable``, given the subdomains' ``bounds`` (B, *shape)): by
    SCORE_SMOOTH x |coefficient| x the gap of their lines, while that is above SMOOTH_MIN_GAP
    and the interval was halved fewer than MAX_HALVINGS times. ``coeffs``: per nonlinearity,
    the deciding row's coefficients reaching it (B, *shape); ``splits``: per split input, the
    subdomains' splits (B, *shape)."""
    names, scores = [], []
    for op in engine.ops:
        if op.name not in coeffs:
            continue
        pre = op.inputs[0]
        if pre not in fixed.bounds:
            continue
        coeff = coeffs[op.name].flatten(1)
        if op.kind in SMOOTH:
            if bounds is None or engine.halvable.get(pre) is not op:
                continue
            l, u = (t.flatten(1) for t in bounds[pre])
            _, bl, _, bu = relaxation(op, l, u)
            gap = bu - bl
            score = SCORE_SMOOTH * coeff.abs() * gap
            open_ = gap > SMOOTH_MIN_GAP
            if pre in splits:
                open_ = open_ & (splits[pre].flatten(1) < 2 ** MAX_HALVINGS)
            names.append((pre, coeff.shape[1]))
            scores.append(torch.where(open_, score, torch.zeros_like(score)))
            continue
        if op.kind not in ("relu", "leaky_relu"):
            continue
        l, u = fixed.bounds[pre][0][0], fixed.bounds[pre][1][0]  # the root's; split neurons excluded below
        unstable = ((l < 0) & (u > 0)).flatten()[None].expand_as(coeff)
        if pre in splits:
            unstable = unstable & (splits[pre].flatten(1) == 0)
        area = (u * (-l) / (u - l).clamp_min(1e-12)).flatten()[None]
        score = (SCORE_NEG * (-coeff).clamp(min=0) + SCORE_POS * coeff.clamp(min=0) + 1e-9) * area
        names.append((pre, coeff.shape[1]))
        scores.append(torch.where(unstable, score, torch.zeros_like(score)))
    if not names:
        return [[] for _ in next(iter(coeffs.values()), [])]
    score = torch.cat(scores, 1)  # (B, every candidate neuron)
    starts = torch.tensor([0] + [n for _, n in names]).cumsum(0)
    values, where = score.topk(min(k, score.shape[1]), dim=1)
    layer = torch.searchsorted(starts, where, right=True) - 1
    out = []
    for vs, ws, ls in zip(values.tolist(), where.tolist(), layer.tolist()):
        out.append([(names[j][0], w - int(starts[j])) for v, w, j in zip(vs, ws, ls) if v > 0])
    return out


# filtered smart branching (De Palma et al. 2021, "Improved branch and bound for neural network
# verification via Lagrangian decomposition"; alpha-beta-CROWN's "kfsb"): the FSB_CANDIDATES best
# neurons by ``_branching``'s score each get their two children bounded by one backward pass with
# the parent's parameters (a new split's multiplier 0), and the neuron whose better child is
# highest is split (the better child, not the worse: with 3 candidates oval21 cifar_base img8194
# took 1,647 subdomains against 2,423, cifar_deep img4168 2,959 against 5,175). oval21, one
# process (subdomains, seconds), BaBSR's score alone -> 10 candidates: cifar_base img2578 2,833,
# 7.7 -> 1,835, 6.9; img8194 4,427, 8.8 -> 915, 4.3; img876 21,037, 48.4 -> 5,629, 27.0;
# cifar_deep img4168 5,257, 30.4 -> 1,613, 20.2; img4510 5,125, 32.9 -> 1,487, 23.5 (16
# candidates: fewer subdomains, more seconds). Dense chains keep BaBSR's score alone
# (FSB_DENSE_CANDIDATES): on mnist_fc 256x4 prop_7 eps 0.05 groups 1-4, 10 candidates took
# 40,000-86,000 subdomains and 18-38 s against 36,000-49,000 and 10-13 s, and group 0 was not
# proved in 60 s (41 s without); 3 candidates were no better
FSB_CANDIDATES = 10
FSB_DENSE_CANDIDATES = 1
FSB_CHUNK = 1024  # children per backward pass


def _filtered(engine: BoundEngine, fixed: _Fixed, bounds: dict, A0: torch.Tensor, alphas: dict, betas: dict,
              mix: dict, candidates: list[list[tuple[str, int]]], rows) -> list[tuple[str, int] | None]:
    """Per subdomain, the candidate (``_branching``'s, best first) whose better child has the
    highest bound, each child bounded by ``BoundEngine.backward`` on its parent's ``bounds``
    (B, *shape) cut at the new split, with its parent's slopes, split terms and mix (B, S, ...).
    The first candidate where a subdomain has only one; None where it has none. (A candidate is
    unstable on its open subdomain, so neither child is empty.)"""
    if not any(len(c) > 1 for c in candidates):
        return _best_of(candidates, [])
    pres = sorted({name for cands in candidates for name, _ in cands})
    # per child (each candidate's active one, then its inactive one): its subdomain, split neuron and side
    src, layer, idx = (t.repeat_interleave(2) for t in _flat_candidates(candidates, pres))
    sign = torch.tensor([1, -1]).repeat(len(src) // 2)
    values = []
    for first in range(0, len(src), FSB_CHUNK):  # (the children's bounds are built a chunk at a time)
        part = slice(first, first + FSB_CHUNK)
        where = src[part]
        child = {}
        for name, (l, u) in bounds.items():
            l, u = l[where], u[where]
            if name in pres and name in engine.halvable:  # the lower half (+1) or the upper one (-1)
                mine = (layer[part] == pres.index(name)).nonzero().flatten()
                shape = l.shape
                l, u = l.flatten(1).clone(), u.flatten(1).clone()
                j, side = idx[part][mine], sign[part][mine]
                mid = l[mine, j] + (u[mine, j] - l[mine, j]) / 2
                u[mine, j] = torch.where(side > 0, mid, u[mine, j])
                l[mine, j] = torch.where(side > 0, l[mine, j], mid)
                l, u = l.reshape(shape), u.reshape(shape)
            elif name in pres:
                mine = (layer[part] == pres.index(name)).nonzero().flatten()
                split = torch.zeros((len(where), l[0].numel()), dtype=torch.int8)
                split[mine, idx[part][mine]] = sign[part][mine].to(torch.int8)
                l, u = cut_at_splits(l, u, split.reshape(l.shape))
            child[name] = (l, u)
        value = engine.backward(engine.graph.output, A0[where], child, {n: a[where] for n, a in alphas.items()},
                                betas={n: t[where] for n, t in betas.items()}, facets=fixed.facets,
                                mix={n: t[where] for n, t in mix.items()})
        values.append(reduce_rows(value.double(), *rows))
    return _best_of(candidates, torch.cat(values).view(-1, 2).max(1).values.tolist())


def _flat_candidates(candidates: list[list[tuple[str, int]]], pres: list[str]) -> tuple[torch.Tensor, ...]:
    """Per candidate of the subdomains that have more than one, in order: its subdomain, its
    layer (an index into ``pres``) and its flat neuron (long tensors)."""
    flat = [(b, pres.index(name), j) for b, cands in enumerate(candidates) if len(cands) > 1 for name, j in cands]
    return tuple(torch.tensor(t, dtype=torch.long) for t in zip(*flat))


def _best_of(candidates: list[list[tuple[str, int]]], scores: list[float]) -> list[tuple[str, int] | None]:
    """Per subdomain, its candidate with the highest score (``scores`` in ``_flat_candidates``'
    order); the only one where it has one, None where it has none."""
    chosen, at = [c[0] if c else None for c in candidates], 0
    for b, cands in enumerate(candidates):
        if len(cands) > 1:
            chosen[b] = cands[max(range(len(cands)), key=lambda i: scores[at + i])]
            at += len(cands)
    return chosen


# the filter's children bounded to first order (``_child_gains``: one pass and its gradient per
# batch) instead of by a pass each: on oval21 cifar_wide img9916's hard group (one core, 95 s)
# 9,315 subdomains against 4,709, the same bound per subdomain, the filter's passes having been
# 57% of a batch's time; a test checks the estimate against each child's pass where it is exact
FSB_FIRST_ORDER = True


def _estimated(engine: BoundEngine, fixed: _Fixed, bounds: dict, A0: torch.Tensor, alphas: dict, betas: dict,
               mix: dict, candidates: list[list[tuple[str, int]]], rows) -> list[tuple[str, int] | None]:
    """``_filtered``'s choice with each child's bound estimated to first order (``_child_gains``)
    instead of by a pass of its own: per subdomain, the candidate whose better child gains most."""
    if not any(len(c) > 1 for c in candidates):
        return _best_of(candidates, [])
    pres = sorted({name for cands in candidates for name, _ in cands})
    gains = _child_gains(engine, fixed, bounds, A0, alphas, betas, mix, pres, rows)
    src, layer, idx = _flat_candidates(candidates, pres)
    better = torch.empty(len(src), dtype=A0.dtype)
    for i, pre in enumerate(pres):
        mine = layer == i
        better[mine] = torch.maximum(*gains[pre])[src[mine], idx[mine]]
    return _best_of(candidates, better.tolist())


def _child_gains(engine: BoundEngine, fixed: _Fixed, bounds: dict, A0: torch.Tensor, alphas: dict, betas: dict,
                 mix: dict, pres: list[str], rows) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per ReLU input in ``pres``: the first-order gain (B, n) of each subdomain's bound (its
    deciding row, ``_bound_fixed``'s parameters) from splitting each neuron, its active child
    and its inactive one. One pass with its gradient gives, per neuron, the coefficient lambda
    reaching the ReLU and nu, the bound's derivative in the coefficient of the ReLU's input. A
    split replaces the neuron's relaxation (lambda * slope, or lambda * upper line and its
    intercept) by lambda (active) or lambda * the leaky slope (inactive): the change of the
    input's coefficient times nu, less the intercept dropped. Exact while no coefficient below
    the split changes sign and the deciding row stays the same; the hull facets' part of an
    upper line is left out."""
    relu_of = {pre: relu for relu, pre in fixed.inputs.items()}
    B, S = A0.shape[:2]
    probes = {pre: torch.zeros((B, S) + tuple(engine.by_name[pre].shape), dtype=A0.dtype, requires_grad=True)
              for pre in pres}
    record: dict[str, torch.Tensor] = {}
    with torch.enable_grad():  # (the caller's pass runs without gradients)
        probed = dict(betas)  # the split terms, plus a probe (zero) on every candidate layer's input
        for n, p in probes.items():
            probed[n] = probed[n] + p if n in probed else p
        value = engine.backward(engine.graph.output, A0, bounds, alphas, record=record, betas=probed,
                                facets=fixed.facets, mix=mix)
        reduce_rows(value, *rows).sum().backward()
    worst = _deciding_row(value.detach().double(), *rows)
    at = torch.arange(B)
    gains = {}
    for pre in pres:
        l, u = (t.reshape(B, -1) for t in bounds[pre])
        nu = probes[pre].grad[at, worst].flatten(1)
        if pre in engine.halvable:
            gains[pre] = _halving_gains(engine.halvable[pre], record, at, worst, nu, l, u)
            continue
        relu = engine.by_name[relu_of[pre]]
        lam = record[relu.name][at, worst].flatten(1)
        _, _, au, bu, crown, _ = relu_parts(relu, l, u)
        slope = relu.slope if relu.kind == "leaky_relu" else 0.0
        al = crown if relu.name not in alphas else alphas[relu.name][at, worst].flatten(1)
        parent = torch.where(lam >= 0, lam * al, lam * au)  # the input's coefficient, and the intercept
        intercept = torch.where(lam >= 0, torch.zeros_like(lam), lam * bu)
        gains[pre] = ((lam - parent) * nu - intercept, (slope * lam - parent) * nu - intercept)
    return gains


def _halving_gains(op, record: dict, at: torch.Tensor, worst: torch.Tensor, nu: torch.Tensor, l: torch.Tensor,
                   u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``_child_gains`` for a smooth nonlinearity's neurons, each halved: its lines on [l, u]
    replaced by those on the lower half, or the upper one (the input's coefficient lambda x slope
    changes, times nu, and so does the intercept that lambda's sign picks)."""
    lam = record[op.name][at, worst].flatten(1)
    k, bl, _, bu = relaxation(op, l, u)
    parent, intercept = lam * k, torch.where(lam >= 0, lam * bl, lam * bu)
    mid = l + (u - l) / 2
    out = []
    for a, b in ((l, mid), (mid, u)):
        k2, bl2, _, bu2 = relaxation(op, a, b)
        out.append((lam * k2 - parent) * nu + torch.where(lam >= 0, lam * bl2, lam * bu2) - intercept)
    return out[0], out[1]
