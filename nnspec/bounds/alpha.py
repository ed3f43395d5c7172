"""alpha-CROWN (Xu et al. 2021): the lower slope of each unstable ReLU becomes a parameter in
[0, 1] per objective (leaky ReLU: [slope, 1]) and the bound is maximised by projected gradient
ascent (Adam). Every iterate's bound is sound, so the best per objective is kept, and so are the
slopes that gave it (branch and bound's warm start).

Two forms: the final objective's slopes alone, on fixed intermediate bounds (``joint`` False; with
hull facets, each unstable neuron's triangle/facet mix is optimised beside its slope), and
alpha-CROWN proper, where every intermediate bound has slopes of its own and is recomputed in every
iteration (``_alpha_joint``), while that takes at most JOINT_ALPHA_LIMIT parameters."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from nnspec.bounds.ascent import Adam
from nnspec.bounds.relax import concretise, intersect, numel, signed_rows

if TYPE_CHECKING:
    from nnspec.bounds.engine import BoundEngine

JOINT_ALPHA_LIMIT = 16_000_000  # slope parameters, beyond which only the final objective's are optimised
MIX_START = 0.5  # an unstable neuron's share of the triangle in its upper line at the start (the rest: its facet)


def optimise(engine: BoundEngine, lo: torch.Tensor, hi: torch.Tensor, C: torch.Tensor, d: torch.Tensor | None = None,
             steps: int = 20, lr: float = 0.25, bounds: dict | None = None,
             deadline: float | None = None, joint: bool | None = None,
             start: dict | None = None, facets: dict | None = None, target: str | None = None,
             ball=None) -> Optimised:
    """alpha-CROWN: the best lower bounds (B, S) of C @ y + d over each box, the tightest bounds
    of every op seen on the way (each iteration's are sound, so their intersection is) and the
    final objective's slopes at the end (a warm start for branch and bound's subdomains).
    ``deadline`` (time.perf_counter()): no step starts after it. ``joint``: optimise every
    intermediate bound's slopes too (default: when that is at most JOINT_ALPHA_LIMIT
    parameters); False: the final objective's only, on the given ``bounds``, starting from
    ``start[relu]`` (B, S, *shape) where given (a warm start; any slopes are sound).
    ``facets`` (``hull.Facets`` per ReLU; with ``joint`` False only): each unstable neuron's
    upper line mixes its triangle with its facet, the mix optimised with the slopes (from
    ``start["mix:<relu>"]`` where given, else MIX_START) and returned in ``mix``. ``target``:
    the op whose values C weighs (with ``joint`` False; default the graph's output), e.g. an
    intermediate layer's neurons, C (B, S, *its shape). ``ball``: the region is that L1/L2 ball
    cut to the boxes (``nnspec.bounds.balls``; given ``bounds`` carry their own)."""
    lo, hi = lo.to(torch.float64), hi.to(torch.float64)
    C = C.to(torch.float64)
    B, S = C.shape[:2]
    d = torch.zeros(B, S, dtype=torch.float64) if d is None else d.to(torch.float64).expand(B, S)
    if bounds is None:
        bounds = engine.intervals(lo, hi, "crown", ball=ball)
    out = engine.graph.output if target is None else target
    A0 = C.reshape((B, S) + engine.by_name[out].shape)
    with torch.no_grad():
        best = engine.backward(out, A0, bounds) + d
        if out in bounds:  # never below IBP's (a caller's bounds may be of the nonlinearities' inputs only)
            best = torch.fmax(best, concretise(A0, *bounds[out]) + d)
    if joint is None:
        joint = not facets and target is None and _joint_alpha_size(engine, B, bounds) <= JOINT_ALPHA_LIMIT
    if joint:
        return _alpha_joint(engine, lo, hi, A0, d, bounds, best, steps, lr, deadline)
    alphas = initial_alphas(engine, bounds, B, S, out)
    if not alphas:
        return Optimised(best, bounds, alphas)
    start = start or {}
    for name, a in start.items():
        if name in alphas:
            alphas[name] = a.to(torch.float64).clone().requires_grad_(True)
    mix = {name: (start[f"mix:{name}"].to(torch.float64).clone() if f"mix:{name}" in start else
                  torch.full((B, S, numel(engine.by_name[name].shape)), MIX_START,
                             dtype=torch.float64)).requires_grad_(True)
           for name in (facets or {}) if name in alphas}
    _clamp(engine, alphas)  # each ReLU's own range (a leaky one's starts at its slope)
    optimiser = Adam(list(alphas.values()) + list(mix.values()), lr=lr)
    kept_alphas, kept_mix = _detached(alphas), _detached(mix)
    for _ in range(steps):
        if deadline is not None and time.perf_counter() > deadline:
            break
        optimiser.zero_grad()
        value = engine.backward(out, A0, bounds, alphas, facets=facets, mix=mix) + d
        better = value.detach() > best
        if bool(better.any()):  # the parameters of the best iterate, per objective
            kept_alphas = {n: _where_rows(better, a.detach(), kept_alphas[n]) for n, a in alphas.items()}
            kept_mix = {n: _where_rows(better, m.detach(), kept_mix[n]) for n, m in mix.items()}
        best = torch.maximum(best, value.detach())
        if not value.requires_grad:  # the slopes do not reach the objective (e.g. behind a max-pool)
            break
        (-value.sum()).backward()
        optimiser.step()
        _clamp(engine, alphas)
        with torch.no_grad():
            for m in mix.values():
                m.clamp_(0.0, 1.0)
    with torch.no_grad():
        value = engine.backward(out, A0, bounds, alphas, facets=facets, mix=mix) + d
        better = value > best
        kept_alphas = {n: _where_rows(better, a.detach(), kept_alphas[n]) for n, a in alphas.items()}
        kept_mix = {n: _where_rows(better, m.detach(), kept_mix[n]) for n, m in mix.items()}
        best = torch.maximum(best, value)
    return Optimised(best, bounds, kept_alphas, kept_mix)


def _alpha_joint(engine: BoundEngine, lo, hi, A0, d, base, best, steps: int, lr: float, deadline: float | None = None
                 ) -> Optimised:
    """alpha-CROWN proper: every intermediate bound gets its own slopes, all optimised together
    for the final objective; intermediate bounds are recomputed (and intersected with the
    CROWN ones, all sound) in every iteration."""
    B, S = A0.shape[:2]
    out = engine.graph.output
    # rows only for the neurons CROWN's pass would bound (``BoundEngine.rows_to_bound``: before a ReLU,
    # those unstable on the starting bounds; on oval21's CNNs 2 x 508 rows of a layer of 2,048
    # neurons instead of 2 x 2,048)
    rows = {start: engine.rows_to_bound(start, base[start]) for start in engine.crown_starts()}
    rows = {start: torch.arange(numel(engine.by_name[start].shape)) if idx is None else idx
            for start, idx in rows.items()}
    rows = {start: idx for start, idx in rows.items() if len(idx)}
    params = {start: initial_alphas(engine, base, B, 2 * len(idx), start) for start, idx in rows.items()}
    params[out] = initial_alphas(engine, base, B, S, out)
    tensors = [a for group in params.values() for a in group.values()]
    if not tensors:
        return Optimised(best, base, {})
    optimiser = Adam(tensors, lr=lr)
    tightest = dict(base)
    for k in range(steps + 1):
        if k and deadline is not None and time.perf_counter() > deadline:
            break
        optimiser.zero_grad()
        bounds = _tightened(engine, lo, hi, base, params, rows)
        value = engine.backward(out, A0, bounds, params[out]) + d
        best = torch.maximum(best, value.detach())
        tightest = {n: intersect(tightest[n], (l.detach(), u.detach())) for n, (l, u) in bounds.items()}
        tightest["input"] = base["input"]  # (with its ball, where the region has one)
        if not value.requires_grad:
            break
        (-value.sum()).backward()
        optimiser.step()
        for group in params.values():
            _clamp(engine, group)
    return Optimised(best, tightest, _detached(params[out]))


def _tightened(engine: BoundEngine, lo, hi, base, params, rows) -> dict[str, tuple]:
    """Every op's bounds: intervals through the ops, intersected with ``base`` and, for the
    neurons ``rows[op]`` (flat indices), with a backward pass from each (upper and lower)
    with the slopes ``params[op]``."""
    bounds: dict[str, tuple] = {"input": base["input"]}
    B = lo.shape[0]
    for op in engine.ops[1:]:
        l, u = intersect(engine.interval(op, bounds), base[op.name])
        if op.name in rows:
            idx = rows[op.name]
            k = len(idx)
            A = signed_rows(numel(op.shape), idx)
            low = engine.backward(op.name, A[None].expand(B, -1, -1).reshape((B, 2 * k) + op.shape), bounds,
                                params[op.name])
            lf, uf = l.flatten(1), u.flatten(1)
            lf = lf.index_copy(1, idx, torch.maximum(lf[:, idx], low[:, :k]))
            uf = uf.index_copy(1, idx, torch.minimum(uf[:, idx], -low[:, k:]))
            l, u = lf.reshape(l.shape), uf.reshape(u.shape)
        bounds[op.name] = (l, u)
    return bounds


def _joint_alpha_size(engine: BoundEngine, B: int, bounds: dict) -> int:
    """Slope parameters that optimising every intermediate bound too would need: per
    nonlinearity input, two rows per neuron to bound (``BoundEngine.rows_to_bound``), each with slopes
    for every ReLU before it."""
    total = 0
    for start in engine.crown_starts():
        k = engine.graph.index[start]
        relus = sum(numel(o.shape) for o in engine.ops[:k] if o.kind in ("relu", "leaky_relu"))
        rows = engine.rows_to_bound(start, bounds[start])
        total += 2 * (numel(engine.by_name[start].shape) if rows is None else len(rows)) * relus
    return B * total


def initial_alphas(engine: BoundEngine, bounds, B: int, S: int, start: str) -> dict[str, torch.Tensor]:
    """CROWN's slopes as the starting point, for the ReLUs that a pass from ``start`` crosses."""
    alphas = {}
    for op in engine.ops[: engine.graph.index[start]]:
        if op.kind not in ("relu", "leaky_relu"):
            continue
        l, u = bounds[op.inputs[0]]
        if not bool(((l < 0) & (u > 0)).any()):
            continue
        low = op.slope if op.kind == "leaky_relu" else 0.0
        init = torch.where(u > -l, 1.0, low).to(torch.float64)
        alphas[op.name] = init[:, None].expand((B, S) + op.shape).clone().requires_grad_(True)
    return alphas


def _clamp(engine: BoundEngine, alphas: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, alpha in alphas.items():
            op = engine.by_name[name]
            alpha.clamp_(min=op.slope if op.kind == "leaky_relu" else 0.0, max=1.0)


@dataclass
class Optimised:
    lower: torch.Tensor  # (B, S) the best lower bounds
    bounds: dict  # op name -> (lo, hi), (B, *shape) each: the tightest seen, all sound
    alphas: dict  # ReLU name -> (B, S, *shape): the final objective's slopes (the best iterate's, with facets)
    mix: dict = field(default_factory=dict)  # ReLU name -> (B, S, n): the best iterate's triangle/facet mix


def _where_rows(better: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """``new`` where ``better`` (B, S), else ``old``; both (B, S, ...)."""
    return torch.where(better.view(better.shape + (1,) * (new.dim() - 2)), new, old)


def _detached(alphas: dict) -> dict:
    return {n: a.detach() for n, a in alphas.items()}
