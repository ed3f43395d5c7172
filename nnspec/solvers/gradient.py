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

from dataclasses import dataclass
from typing import Callable

import torch

from nnspec.solvers.projection import project_ball

ValueAndGrad = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class GradientOptions:
    steps: int = 30  # gradient steps per search
    restarts: int = 4  # parallel starts per centre (the first at the centre)
    step: float = 0.25  # initial step, as a fraction of the radius
    momentum: float = 0.75
    checkpoint: int = 5  # steps between step-size checks
    seed: int = 0


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
            hi: torch.Tensor) -> torch.Tensor:
    """Into the ball around ``centre`` (A, 1, f) of ``radius`` (A,), then the box [lo, hi] (A, 1, f)
    (clipping to a box that holds the centre only moves points toward it: they stay in the ball)."""
    delta = project_ball(y - centre, norm, radius[:, None].expand(y.shape[:2]))
    return torch.maximum(torch.minimum(centre + delta, hi), lo)


def search(value_and_grad: ValueAndGrad, idx: torch.Tensor, centre: torch.Tensor, radius: torch.Tensor,
           lo: torch.Tensor, hi: torch.Tensor, norm: str, opts: GradientOptions,
           start: torch.Tensor | None = None, stop_at: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise s from ``start`` (A, f; default the centres) and random restarts in the balls:
    the best point (A, f) and its s (A,). ``centre``, ``lo``, ``hi``: (A, f); ``radius`` (A,).
    Centres stop early once s < ``stop_at``."""
    A, f = centre.shape
    K = opts.restarts
    gen = torch.Generator().manual_seed(opts.seed)
    c, blo, bhi = centre[:, None, :], lo[:, None, :], hi[:, None, :]
    noise = (2 * torch.rand((A, K, f), generator=gen, dtype=torch.float64) - 1).to(centre.dtype)
    if norm != "linf":
        noise = noise / noise.abs().sum(-1, keepdim=True).clamp_min(1e-30) if norm == "l1" else \
            noise / noise.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    y = c + noise * radius[:, None, None].to(centre.dtype) * 0.5
    y[:, 0, :] = centre if start is None else start
    y = project(y, c, norm, radius.to(centre.dtype), blo, bhi)
    step = (opts.step * radius.to(torch.float64))[:, None].expand(A, K).clone()
    velocity = torch.zeros_like(y)
    best_y, best_s = y.clone(), torch.full((A, K), float("inf"), dtype=torch.float64)
    last_check = torch.full((A, K), float("inf"), dtype=torch.float64)
    active = torch.ones(A, dtype=torch.bool)
    for t in range(opts.steps):
        rows = active.nonzero().flatten()
        if rows.numel() == 0:
            break
        s, g = value_and_grad(idx[rows], y[rows])
        better = s < best_s[rows]
        best_s[rows] = torch.where(better, s, best_s[rows])
        best_y[rows] = torch.where(better[..., None], y[rows], best_y[rows])
        if stop_at is not None:
            done = (best_s[rows] < stop_at).any(dim=1)
            active[rows[done]] = False
        if (t + 1) % opts.checkpoint == 0:  # no progress since the last check: halve the step
            stalled = best_s[rows] >= last_check[rows]
            step[rows] = torch.where(stalled, step[rows] / 2, step[rows])
            last_check[rows] = best_s[rows]
        direction = -steepest(g.to(torch.float64), norm).to(y.dtype)
        velocity[rows] = opts.momentum * velocity[rows] + (1 - opts.momentum) * direction if t else direction
        moved = y[rows] + step[rows][..., None].to(y.dtype) * velocity[rows]
        y[rows] = project(moved, c[rows], norm, radius[rows].to(centre.dtype), blo[rows], bhi[rows])
    k = best_s.argmin(dim=1)
    ar = torch.arange(A)
    return best_y[ar, k], best_s[ar, k]
