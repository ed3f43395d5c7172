"""Gradient-guided searches for violations (white box), batched over centres and restarts.

``GradientSearch`` minimises a property's own s over a ball intersected with a box, for many
centres at once, by projected gradient steps in the spirit of APGD (Croce & Hein 2020): the
steepest-descent direction of the norm (sign of the gradient for L-inf, the normalised gradient
for L2, the largest coordinates for L1), momentum, a step size that starts at a fraction of the
radius and halves when a checkpoint shows no progress, restarts in parallel (the first from the
centre, the others from random points of the ball). ``minimal_norm`` then looks for the closest
violation in the spirit of FMN (Pintor et al. 2021): a bisection on the radius, each probe a
projected-gradient search warm-started from the closest violation scaled into the smaller ball.

Everything is in the free coordinates of the search; the caller supplies ``value_and_grad(idx, y)``
(s and its gradient at points y (A, K, f), charged to the model's budget) and keeps track of every
evaluated point (witnesses, slopes). A gradient that is zero or not finite at the centre marks the
model as one for black-box search (sign or step activations, quantised networks).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import torch

from nnspec.properties.regions import distance
from nnspec.solvers.projection import into_ball, project_ball

STEP = 0.1  # the minimal-norm walk's first step, as a fraction of the starting distance
ValueAndGrad = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class GradientOptions:
    steps: int = 30  # gradient steps per search
    restarts: int = 4  # parallel starts per centre (the first at the centre)
    step: float = 0.25  # initial step, as a fraction of the radius
    momentum: float = 0.75
    checkpoint: int = 5  # steps between step-size checks
    seed: int = 0
    max_seconds: float = 0.0  # wall-clock cap of one search (0: none)
    fresh_below: float = 2.0 ** -8  # a restart whose step fell below this share of its first starts afresh


def steepest(grad: torch.Tensor, norm: str, sparsity: float = 0.05) -> torch.Tensor:
    """The unit-norm direction of steepest ascent of the norm's dual: (A, K, f)."""
    if norm == "linf":
        return torch.sign(grad)
    if norm == "l2":
        return grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    # l1: move the few coordinates with the largest gradients (the L1 ball's vertices are sparse)
    k = max(1, int(sparsity * grad.shape[-1]))
    top = grad.abs().topk(k, dim=-1).indices
    d = torch.zeros_like(grad).scatter(-1, top, torch.sign(grad).gather(-1, top))
    return d / k


def project(y: torch.Tensor, centre: torch.Tensor, norm: str, radius: torch.Tensor, lo: torch.Tensor,
            hi: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Into the ball around ``centre`` (A, 1, f) of ``radius`` (A,) or (A, K), then the box [lo, hi] (A, 1, f)
    (clipping to a box that holds the centre only moves points toward it: they stay in the ball).
    ``out``: where to write (``y`` itself for an in-place step: the searches' state is large)."""
    r = (radius[:, None, None] if radius.dim() == 1 else radius[..., None]).to(y.dtype)  # (A, 1|K, 1)
    if norm == "linf":  # the ball and the box are one box: one clamp
        return torch.clamp(y, torch.maximum(centre - r, lo), torch.minimum(centre + r, hi), out=out)
    if norm == "l2":  # scale the offset into the ball, then clip to the box
        delta = y - centre
        scale = (r / delta.norm(dim=-1, keepdim=True).clamp_min(1e-30)).clamp_(max=1.0)
        moved = torch.addcmul(centre, delta, scale, out=out).clamp_(lo, hi)
    else:
        moved = torch.clamp(centre + project_ball(y - centre, norm, r[..., 0].expand(y.shape[:2])), lo, hi, out=out)
    # inside as distances are measured (float rounding puts a share of the sphere's points outside);
    # a new tensor only where some point moved
    inside = into_ball(moved, centre, norm, r[..., 0])
    return moved if inside is moved else moved.copy_(inside)


def search(value_and_grad: ValueAndGrad, idx: torch.Tensor, centre: torch.Tensor, radius: torch.Tensor,
           lo: torch.Tensor, hi: torch.Tensor, norm: str, opts: GradientOptions,
           start: torch.Tensor | None = None, stop_at: float | None = None,
           hint: torch.Tensor | None = None, every: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise s from ``start`` (A, f; default the centres; or (A, J, f): the last J restarts'
    starts, the first still at the centre) and random restarts in the balls: the best point
    (A, f) and its s (A,). ``centre``, ``lo``, ``hi``: (A, f); ``radius`` (A,).
    ``hint`` (A, f): one more start (e.g. the vertex where a linear bound of s is least).
    Centres stop early once s < ``stop_at``. ``every``: the best point of every restart instead,
    (A, K, f) and (A, K)."""
    A, f = centre.shape
    K = opts.restarts
    gen = torch.Generator().manual_seed(opts.seed)
    c, blo, bhi = centre[:, None, :], lo[:, None, :], hi[:, None, :]
    noise = _noise((A, K, f), norm, gen).to(centre.dtype)
    if norm == "linf":  # every other restart from a random vertex of the box: adversarial regions of
        noise[:, 1::2] = torch.sign(noise[:, 1::2])  # ReLU nets often touch the corners first
    y = c + noise * radius[:, None, None].to(centre.dtype) * (1.0 if norm == "linf" else 0.5)
    if start is None:
        y[:, 0, :] = centre
    elif start.dim() == 2:
        y[:, 0, :] = start
    else:  # (A, J, f): the last J restarts
        y[:, 0, :] = centre
        y[:, K - start.shape[1]:, :] = start[:, :K]
    if hint is not None and K > 1:
        y[:, 1, :] = hint
    y = project(y, c, norm, radius.to(centre.dtype), blo, bhi)
    step = (opts.step * radius.to(torch.float64))[:, None].expand(A, K).clone()
    velocity = torch.zeros_like(y)
    best_y, best_s = y.clone(), torch.full((A, K), float("inf"), dtype=torch.float64)
    last_check = torch.full((A, K), float("inf"), dtype=torch.float64)
    active = torch.ones(A, dtype=torch.bool)
    until = time.perf_counter() + opts.max_seconds if opts.max_seconds > 0 else math.inf
    fresh_below = (opts.fresh_below * opts.step * radius.to(torch.float64))[:, None]  # (A, 1)
    for t in range(opts.steps):
        # the step works in place on views of the state when every centre is active (the usual
        # case: restarts make these tensors large, and copies of them cost more than the
        # arithmetic), on copies of the active rows otherwise, written back at the end
        every_row = bool(active.all())
        rows = slice(None) if every_row else active.nonzero().flatten()
        if (not every_row and rows.numel() == 0) or time.perf_counter() > until:
            break
        state = [y, velocity, step, best_y, best_s, last_check]
        yr, vr, sr, byr, bsr, lcr = state if every_row else [v[rows] for v in state]
        s, g = value_and_grad(idx[rows], yr)
        better = s < bsr
        if bool(better.any()):
            bsr[better] = s[better]
            byr[better] = yr[better]
        # (a, K): on a plateau (every ReLU of a layer off, say), no step moves the point; after many
        # fruitless halvings, the restart has converged: either starts afresh at a random point of
        # a random face (only long searches get that far: 30 steps halve at most 6 times)
        flat = (g.abs().amax(-1) == 0) | (sr < fresh_below[rows])
        if bool(flat.any()) and t + 1 < opts.steps:
            fresh = c[rows] + _noise(yr.shape, norm, gen, faces=True).to(y.dtype) * \
                radius[rows][:, None, None].to(y.dtype)
            fresh = project(fresh, c[rows], norm, radius[rows].to(centre.dtype), blo[rows], bhi[rows])
            yr[flat] = fresh[flat]
            sr[flat] = (opts.step * radius[rows].to(torch.float64)[:, None].expand_as(sr))[flat]
            vr[flat] = 0.0
            lcr[flat] = float("inf")
        if stop_at is not None:
            done = (bsr < stop_at).any(dim=1)
            active[done if every_row else rows[done]] = False
        if (t + 1) % opts.checkpoint == 0:  # no progress since the last check: halve the step
            stalled = bsr >= lcr
            sr[stalled] /= 2
            lcr.copy_(bsr)
        direction = steepest(g if g.dtype == y.dtype else g.to(y.dtype), norm)
        if t:
            vr.mul_(opts.momentum).sub_(direction, alpha=1 - opts.momentum)
        else:
            vr.copy_(direction).neg_()
        yr.addcmul_(sr[..., None] if sr.dtype == y.dtype else sr[..., None].to(y.dtype), vr)
        project(yr, c[rows], norm, radius[rows], blo[rows], bhi[rows], out=yr)
        if not every_row:
            for whole, part in zip(state, (yr, vr, sr, byr, bsr, lcr)):
                whole[rows] = part
    if every:
        return best_y, best_s
    k = best_s.argmin(dim=1)
    ar = torch.arange(A)
    return best_y[ar, k], best_s[ar, k]


def _noise(shape: tuple, norm: str, gen: torch.Generator, faces: bool = False) -> torch.Tensor:
    """Random offsets in the unit ball of ``norm`` (float64, ``shape``): uniform in the L-inf
    cube, random directions for L2 and L1. ``faces``: L-inf coordinates at -1 or +1 half the
    time each (a random point of a random face: a piecewise-linear net's violations often lie on
    the box's faces, where uniform points almost never fall); L2 and L1 offsets are unit
    vectors either way (the caller scales them: the first restarts to half the radius, fresh
    ones to the ball's surface)."""
    noise = 2 * torch.rand(shape, generator=gen, dtype=torch.float64) - 1
    if norm == "linf":
        if faces:
            snap = torch.rand(shape, generator=gen, dtype=torch.float64) < 0.5
            noise = torch.where(snap, torch.sign(noise), noise)
        return noise
    if norm == "l1":
        return noise / noise.abs().sum(-1, keepdim=True).clamp_min(1e-30)
    return noise / noise.norm(dim=-1, keepdim=True).clamp_min(1e-30)


def vertex_walk(value_and_grad: ValueAndGrad, idx: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor,
                steps: int = 8) -> None:
    """For L-inf boxes: from the two uniform corners of each box [lo, hi] (A, f) (every coordinate
    at its upper bound, and at its lower bound), jump again and again to the vertex that the
    gradient's signs point at (where s decreases to first order). Violations of ReLU networks on
    L-inf boxes often sit at vertices that small gradient steps do not reach (measured on a VNN-COMP
    mnist_fc instance: the vertex walk from the upper corner found a margin of -0.44 in a few
    jumps where 64 restarts of projected gradient stalled at +0.94). Points are recorded by the
    caller's ``value_and_grad``; nothing is returned."""
    y = torch.stack([hi, lo], dim=1)  # (A, 2, f)
    blo, bhi = lo[:, None, :], hi[:, None, :]
    seen: list[torch.Tensor] = []
    for _ in range(steps):
        _, g = value_and_grad(idx, y)
        seen.append(y)
        nxt = torch.where(g.to(y.dtype) > 0, blo, bhi)
        if any(bool((nxt == old).all()) for old in seen[-2:]):  # a fixed point or a 2-cycle: nothing new
            break
        y = nxt


def minimal_norm(value_and_grad: ValueAndGrad, idx: torch.Tensor, centre: torch.Tensor, lo: torch.Tensor,
                 hi: torch.Tensor, norm: str, start: torch.Tensor, steps: int, *, gamma: float = 0.05,
                 slack: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The closest violation, in the spirit of FMN (Pintor et al. 2021), from violations ``start``
    (A, K, f) of centres ``centre`` (A, f) in the domain box [lo, hi] (A, f): first the closest
    violation on each segment centre -> start, then a norm budget eps that shrinks toward the
    current distance while the point violates (s < -slack) and grows back when it does not, with
    gradient steps on s projected onto the eps-ball, step sizes annealed (cosine). ``steps`` counts
    evaluations per start. Returns the closest violating point (A, f) and its distance (A,)."""
    A, K, f = start.shape
    c = centre[:, None, :]
    y = _segment_search(value_and_grad, idx, centre, start, slack)
    steps = max(1, steps - 24)
    eps = _norm((y - c).to(torch.float64), norm)  # (A, K)
    alpha0 = eps.clone()
    best = y[:, 0].clone()
    best_d = torch.full((A,), float("inf"), dtype=torch.float64)
    for t in range(steps):
        s, g = value_and_grad(idx, y)
        d = _norm((y - c).to(torch.float64), norm)
        adv = s < -slack
        dd = torch.where(adv, d, torch.full_like(d, float("inf")))
        k = dd.argmin(1)
        ar = torch.arange(A)
        closer = dd[ar, k] < best_d
        best_d = torch.where(closer, dd[ar, k], best_d)
        best = torch.where(closer[:, None], y[ar, k], best)
        cos = 0.5 * (1 + math.cos(math.pi * t / max(steps, 1)))
        g_t = gamma * cos + 1e-3 * (1 - cos)
        eps = torch.where(adv, torch.minimum(eps * (1 - g_t), d), eps * (1 + g_t))
        alpha = alpha0 * STEP * (cos + 0.02)
        direction = -steepest(g.to(torch.float64), norm)
        moved = y + (alpha[..., None] * direction).to(y.dtype)
        y = project(moved, c, norm, eps.to(y.dtype), lo[:, None, :], hi[:, None, :])
    return best, best_d


def _norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """The norm of each offset (..., f) -> (...), by the regions' own ``distance``."""
    return distance(delta.reshape(-1, delta.shape[-1]), norm).reshape(delta.shape[:-1])


def closest_starts(y: torch.Tensor, s: torch.Tensor, dist: torch.Tensor, slack: float, k: int):
    """From the restarts' best points y (A, K, f), their s and distances (A, K): which centres have
    a violation (s < -slack), the distance of the closest (A,), and the k closest violating points
    (A, k, f) as starts for ``minimal_norm`` (the closest, not the deepest: restarts without a
    violation repeat the closest one)."""
    dist = torch.where(s < -slack, dist.to(torch.float64), torch.full_like(dist, math.inf, dtype=torch.float64))
    k = min(k, y.shape[1])
    order = dist.argsort(1)[:, :k]
    starts = y.gather(1, order[..., None].expand(-1, -1, y.shape[-1]))
    ok = torch.isfinite(dist.gather(1, order))
    starts = torch.where(ok[..., None], starts, starts[:, :1].expand(-1, k, -1))
    return torch.isfinite(dist).any(1), dist.gather(1, order)[:, 0], starts


def _segment_search(value_and_grad: ValueAndGrad, idx, centre, violation, slack: float, points: int = 12,
                    rounds: int = 2) -> torch.Tensor:
    """The violation closest to the centre on each segment centre (A, f) -> violation (A, K, f),
    two rounds of ``points`` evaluations for all at once."""
    A, K, f = violation.shape
    lo = torch.zeros(A, K, dtype=torch.float64)
    hi = torch.ones(A, K, dtype=torch.float64)
    c = centre[:, None, None, :]
    for _ in range(rounds):
        ts = lo[..., None] + (hi - lo)[..., None] * torch.linspace(0, 1, points + 2, dtype=torch.float64)[1:-1]
        y = c + ts[..., None].to(centre.dtype) * (violation - centre[:, None, :])[:, :, None, :]  # (A, K, P, f)
        s, _ = value_and_grad(idx, y.reshape(A, K * points, f))
        bad = (s < -slack).reshape(A, K, points)
        first = torch.where(bad.any(-1), bad.to(torch.long).argmax(-1), torch.full((A, K), points, dtype=torch.long))
        found = bad.any(-1)
        prev = torch.where(first > 0, ts.gather(-1, (first - 1).clamp_min(0)[..., None])[..., 0], lo)
        hi = torch.where(found, ts.gather(-1, first.clamp_max(points - 1)[..., None])[..., 0], hi)
        lo = torch.where(found, prev, lo)
    return centre[:, None, :] + hi[..., None].to(centre.dtype) * (violation - centre[:, None, :])


def distance_of(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """The norm of each point's offset, (..., f) -> (...), in float64."""
    return _norm(delta.to(torch.float64), norm)
