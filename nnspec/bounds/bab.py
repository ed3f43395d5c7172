"""Branch and bound: complete verification of linear objectives over a box, anytime.

A subdomain is the box, possibly cut (input splitting), with some ReLU-like neurons fixed active
(z >= 0) or inactive (z <= 0) (ReLU splitting). Each is bounded by CROWN with its splits folded
into the bounds of the split neurons, so their relaxations are exact and every later bound is
recomputed under them; a subdomain whose splits contradict the bounds is empty, so proved.
Unproved subdomains with the lowest bounds are split first, a batch at a time (one batched CROWN
call bounds all children). Branching: for ReLU splits the unstable neuron with the largest
|coefficient| x relaxation area from the last backward pass (in the spirit of BaBSR); for input
splits the dimension with the largest |coefficient| x width ("smear"). Input splitting is the
default for inputs of at most 16 dimensions (ACAS Xu's 5), ReLU splitting otherwise.

Sound for the same reasons as CROWN: on a subdomain every split neuron's bound holds, the
relaxations hold on those bounds, and the linear bound is minimised over a superset (the box).
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from dataclasses import dataclass

import torch

from nnspec.bounds.engine import BoundEngine
from nnspec.bounds.radius import group_max, reduce_rows


BETA_STEPS = 8  # beta-CROWN iterations per batch of subdomains (0: plain CROWN)
BETA_LR = 0.1


@dataclass(frozen=True)
class BabResult:
    proven: bool
    lower: float  # a proved lower bound of min over rows of C @ y - threshold on the box
    domains: int  # subdomains bounded
    seconds: float
    stop: str  # proven | time | domains


@dataclass
class _Domain:
    lo: torch.Tensor  # (*input_shape)
    hi: torch.Tensor
    splits: dict[str, torch.Tensor]  # preact name -> int8 (*shape)
    bound: float


def verify(engine: BoundEngine, lo: torch.Tensor, hi: torch.Tensor, C: torch.Tensor, threshold: float = 0.0, *,
           time_limit: float = 10.0, mode: str = "auto", batch: int = 64, max_domains: int = 200_000,
           slack: float = 0.0, offsets: torch.Tensor | None = None, groups: torch.Tensor | None = None,
           found: list | None = None) -> BabResult:
    """Prove min over rows of C @ y(x) > threshold + slack for every x in [lo, hi] (one box,
    ``lo``/``hi`` shaped like one input; ``C`` (S, m)), or give the best proved lower bound of
    min_rows(C @ y) - threshold when time or the domain limit runs out. With ``offsets`` and
    ``groups`` the objective is min over groups of max over a group's rows of C @ y + offset
    (an output formula's violation disjuncts, each refuted by any one of its atoms).

    ``found``: with input splitting, each new subdomain's most promising points (the vertex that
    minimises the deciding row's linear bound, and the midpoint) are evaluated exactly (float64); a
    point where the objective is <= 0 is appended to ``found`` and the search stops: a candidate
    counterexample, for the caller to confirm on the model."""
    started = time.perf_counter()
    shape = tuple(engine.graph.input_shape)
    lo, hi = lo.double().reshape(shape), hi.double().reshape(shape)
    C = C.double()
    if mode == "auto":
        mode = "input" if lo.numel() <= 16 else "relu"
    relus = [op for op in engine.ops if op.kind in ("relu", "leaky_relu")]
    if mode == "relu" and not relus:
        mode = "input"
    goal = threshold + slack
    counter = itertools.count()
    rows = (offsets, groups)
    bounds, records, empty = _bound(engine, [_Domain(lo, hi, {}, 0.0)], C, rows)
    root_bound = float(bounds[0]) - threshold
    seen = 1
    if empty[0] or float(bounds[0]) > goal:
        return BabResult(True, root_bound if not empty[0] else math.inf, seen, time.perf_counter() - started, "proven")
    heap: list[tuple[float, int, _Domain, dict]] = []
    root = _Domain(lo, hi, {}, float(bounds[0]))
    heapq.heappush(heap, (root.bound, next(counter), root, {k: v[0] for k, v in records.items()}))
    while heap:
        if time.perf_counter() - started > time_limit:
            return BabResult(False, heap[0][0] - threshold, seen, time.perf_counter() - started, "time")
        if seen >= max_domains:
            return BabResult(False, heap[0][0] - threshold, seen, time.perf_counter() - started, "domains")
        parents = [heapq.heappop(heap) for _ in range(min(batch, len(heap)))]
        children: list[_Domain] = []
        for _, _, dom, rec in parents:
            kids = _split_relu(engine, dom, rec) if mode == "relu" else None
            if kids is None:  # no unstable neuron left (or input mode): cut the box
                kids = _split_input(dom, rec)
            children.extend(kids)
        bounds, records, empty = _bound(engine, children, C, rows)
        seen += len(children)
        if found is not None and mode == "input":
            hit = _probe(engine, children, records, C, rows)
            if hit is not None:
                found.append(hit)
                return BabResult(False, -math.inf, seen, time.perf_counter() - started, "counterexample")
        for i, child in enumerate(children):
            b = float(bounds[i])
            if empty[i] or b > goal:
                continue
            child.bound = b
            heapq.heappush(heap, (b, next(counter), child, {k: v[i] for k, v in records.items()}))
    return BabResult(True, goal - threshold, seen, time.perf_counter() - started, "proven")


def _bound(engine: BoundEngine, domains: list[_Domain], C: torch.Tensor, rows=(None, None)):
    """CROWN bounds (min over rows, or over groups of rows: ``reduce_rows``) of a batch of
    subdomains, the coefficients reaching each nonlinearity and the input for the deciding row
    (the best row of the worst group), and which subdomains are empty."""
    lo = torch.stack([d.lo for d in domains])
    hi = torch.stack([d.hi for d in domains])
    names = {n for d in domains for n in d.splits}
    splits = {n: torch.stack([d.splits.get(n, torch.zeros(engine.by_name[n].shape, dtype=torch.int8))
                              for d in domains]) for n in names}
    with torch.no_grad():
        bounds = engine.intervals(lo, hi, "crown", splits=splits or None)
        empty = torch.zeros(len(domains), dtype=torch.bool)
        for n in names:
            l, u = bounds[n]
            empty |= (l > u + 1e-12).flatten(1).any(1)
        B = len(domains)
        out = engine.graph.output
        A0 = C[None].expand(B, -1, -1).reshape((B, C.shape[0]) + engine.by_name[out].shape)
        record: dict[str, torch.Tensor] = {}
        low = engine.backward(out, A0, bounds, record=record)
    if splits and BETA_STEPS:
        low = torch.maximum(low, _beta_crown(engine, out, A0, bounds, splits, low))
    offsets, groups = rows
    with torch.no_grad():
        worst = _deciding_row(low, offsets, groups)
        rows = {name: a[torch.arange(B), worst] for name, a in record.items()}  # (B, *shape)
        extra = {f"bounds:{n}": torch.stack([bounds[n][0], bounds[n][1]], 1)
                 for n in (op.inputs[0] for op in engine.ops if op.kind in ("relu", "leaky_relu"))}
    return reduce_rows(low, offsets, groups), rows | extra, empty


def _probe(engine: BoundEngine, domains: list[_Domain], records: dict, C, rows) -> torch.Tensor | None:
    """The first point among the subdomains' promising points where the objective is <= 0."""
    lo = torch.stack([d.lo for d in domains])
    hi = torch.stack([d.hi for d in domains])
    coeff = records.get("input")
    points = [(lo + hi) / 2]
    if coeff is not None:
        points.insert(0, torch.where(coeff.reshape(lo.shape) >= 0, lo, hi))
    x = torch.cat(points)
    with torch.no_grad():
        y = engine.intervals(x, x, "ibp")[engine.graph.output][0].flatten(1)
        value = reduce_rows(y @ C.T, *rows)
    bad = (value <= 0).nonzero()
    return None if len(bad) == 0 else x[int(bad[0])]


def _deciding_row(low: torch.Tensor, offsets, groups) -> torch.Tensor:
    """(B,) the row whose bound decides each subdomain's value: the worst row, or with groups the
    best row of the worst group."""
    if groups is None:
        return (low if offsets is None else low + offsets).argmin(1)
    v = low + (0 if offsets is None else offsets.to(low))
    per_group = group_max(v, groups)
    worst_group = per_group.argmin(1)
    in_group = groups.view(1, -1) == worst_group.view(-1, 1)
    return torch.where(in_group, v, torch.full_like(v, -torch.inf)).argmax(1)


def _beta_crown(engine: BoundEngine, out: str, A0: torch.Tensor, bounds, splits: dict[str, torch.Tensor],
                best: torch.Tensor) -> torch.Tensor:
    """beta-CROWN (Wang et al. 2021) for a batch of subdomains: the split constraints enter the
    bound through multipliers beta >= 0 (a term -beta * split * z, <= 0 on the subdomain), optimised
    together with the final objective's ReLU slopes by projected gradient ascent; every iterate is
    sound, the best kept."""
    B, S = A0.shape[:2]
    betas = {n: torch.zeros((B, S) + tuple(v.shape[1:]), dtype=torch.float64, requires_grad=True)
             for n, v in splits.items()}
    alphas = engine._initial_alphas(bounds, B, S, out)
    optimiser = torch.optim.Adam(list(betas.values()) + list(alphas.values()), lr=BETA_LR)
    signs = {n: v.to(torch.float64)[:, None] for n, v in splits.items()}
    for _ in range(BETA_STEPS):
        optimiser.zero_grad()
        terms = {n: -betas[n] * signs[n] for n in betas}
        value = engine.backward(out, A0, bounds, alphas, betas=terms)
        best = torch.maximum(best, value.detach())
        (-value.sum()).backward()
        optimiser.step()
        with torch.no_grad():
            for b in betas.values():
                b.clamp_(min=0)
        engine._clamp(alphas)
    with torch.no_grad():
        terms = {n: -betas[n] * signs[n] for n in betas}
        return torch.maximum(best, engine.backward(out, A0, bounds, alphas, betas=terms))


def _split_relu(engine: BoundEngine, dom: _Domain, rec: dict) -> list[_Domain] | None:
    best, where = 0.0, None
    for op in engine.ops:
        if op.kind not in ("relu", "leaky_relu"):
            continue
        pre = op.inputs[0]
        lu = rec.get(f"bounds:{pre}")
        coeff = rec.get(op.name)
        if lu is None or coeff is None:
            continue
        l, u = lu[0], lu[1]
        fixed = dom.splits.get(pre)
        unstable = (l < 0) & (u > 0)
        if fixed is not None:
            unstable &= fixed == 0
        if not bool(unstable.any()):
            continue
        area = torch.where(unstable, u * (-l) / (u - l).clamp_min(1e-12), torch.zeros_like(u))
        score = (coeff.abs() + 1e-9) * area
        k = int(score.flatten().argmax())
        value = float(score.flatten()[k])
        if value > best:
            best, where = value, (pre, k)
    if where is None:
        return None
    pre, k = where
    kids = []
    for sign in (1, -1):
        splits = dict(dom.splits)
        current = splits.get(pre, torch.zeros(engine.by_name[pre].shape, dtype=torch.int8)).clone()
        current.view(-1)[k] = sign
        splits[pre] = current
        kids.append(_Domain(dom.lo, dom.hi, splits, dom.bound))
    return kids


def _split_input(dom: _Domain, rec: dict) -> list[_Domain]:
    width = dom.hi - dom.lo
    coeff = rec.get("input")
    score = width * (coeff.abs() if coeff is not None else 1.0) + 1e-12 * width
    k = int(score.flatten().argmax())
    mid = (dom.lo.flatten()[k] + dom.hi.flatten()[k]) / 2
    left_hi, right_lo = dom.hi.clone(), dom.lo.clone()
    left_hi.view(-1)[k] = mid
    right_lo.view(-1)[k] = mid
    return [_Domain(dom.lo, left_hi, dom.splits, dom.bound), _Domain(right_lo, dom.hi, dom.splits, dom.bound)]
