"""The augmented Lagrangian of DeepQuant's Algorithm 2, in the modified-barrier form of
Conn, Gould & Toint / Lewis & Torczon / Kolda for an inequality constraint c(x) <= 0:

    Theta(x; lam, q) = f(x) - lam * q * log(q - c(x)),      q - c(x) > 0, else +inf

(the paper writes log(q + c(x)) with c = ||x - x0|| - d, which has the sign the wrong way round
for c <= 0 meaning feasible). Each subproblem is solved over the box by MADS; after it, the
multiplier is updated to lam * q / (q - c(x*)) (the first-order estimate) and the shift shrinks,
so that in the limit the barrier hugs the constraint and only feasible points remain attractive.
The functions are batched over problems: every argument has a leading problem dimension.
"""

from __future__ import annotations

import math

import torch


def barrier(f: torch.Tensor, c: torch.Tensor, lam: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Theta for values f (A, K), constraint values c (A, K), multipliers and shifts (A,)."""
    gap = shift[:, None] - c
    value = f - lam[:, None] * shift[:, None] * torch.log(gap.clamp_min(1e-300))
    return torch.where(gap > 0, value, torch.full_like(value, math.inf))


def update(lam: torch.Tensor, shift: torch.Tensor, c_star: torch.Tensor, shrink: float = 0.5
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """New multipliers and shifts after a subproblem ended at constraint values c_star (A,)."""
    new_lam = lam * shift / (shift - c_star).clamp_min(1e-12)
    return new_lam.clamp(1e-8, 1e8), shift * shrink
