"""Projections onto norm balls, batched over rows: (B, n) -> (B, n)."""

from __future__ import annotations

import torch

from nnspec.properties.regions import distance_np


def project_l2(delta: torch.Tensor, radius: torch.Tensor | float) -> torch.Tensor:
    norms = delta.norm(dim=-1, keepdim=True)
    r = torch.as_tensor(radius, dtype=delta.dtype)
    r = r.unsqueeze(-1) if r.dim() > 0 else r
    return delta * torch.clamp(r / norms.clamp_min(1e-30), max=1.0)


def project_l1(delta: torch.Tensor, radius: torch.Tensor | float) -> torch.Tensor:
    """Euclidean projection onto the L1 ball (Duchi et al. 2008, sort-based, O(n log n))."""
    shape = delta.shape
    v = delta.reshape(-1, shape[-1])
    r = torch.as_tensor(radius, dtype=delta.dtype).expand(shape[:-1]).reshape(-1)
    a = v.abs()
    inside = a.sum(dim=1) <= r
    mu = a.sort(dim=1, descending=True).values
    cums = mu.cumsum(dim=1)
    ks = torch.arange(1, v.shape[1] + 1, dtype=v.dtype)
    cond = mu - (cums - r[:, None]) / ks > 0
    rho = cond.to(torch.long).cumsum(dim=1).argmax(dim=1)  # last index where cond holds
    theta = (cums.gather(1, rho[:, None]).squeeze(1) - r) / (rho + 1).to(v.dtype)
    w = torch.sign(v) * (a - theta[:, None]).clamp_min(0)
    return torch.where(inside[:, None], v, w).reshape(shape)


def project_ball(delta: torch.Tensor, norm: str, radius) -> torch.Tensor:
    if norm == "l2":
        return project_l2(delta, radius)
    if norm == "l1":
        return project_l1(delta, radius)
    if norm == "linf":
        r = torch.as_tensor(radius, dtype=delta.dtype)
        r = r.unsqueeze(-1) if r.dim() > 0 else r
        return torch.maximum(torch.minimum(delta, r), -r)
    raise ValueError(f"no projection for norm {norm!r}")


def box_in_ball(x0: torch.Tensor, radius: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The L-inf ball's bounding box [x0 - r, x0 + r] cut to [lower, upper], in x0's dtype
    (x0 (A, n), radius (A, 1) or a scalar), with every corner inside the ball as distances are
    measured in that dtype: x0 + r rounds to the nearest float, and for about a third of the 256
    values k/255 of an 8-bit image that lies outside (0.02 + 3e-8 for r = 0.02 in float32). A
    search's point at such a corner would count as outside the ball; those coordinates move one
    float inward."""
    r = torch.as_tensor(radius, dtype=x0.dtype)
    lo = torch.maximum(x0 - r, lower)
    hi = torch.minimum(x0 + r, upper)
    for _ in range(4):  # one step nearly always does; the loop ends when none is outside
        over_lo, over_hi = (x0 - lo) > r, (hi - x0) > r
        if not bool(over_lo.any() or over_hi.any()):
            break
        lo = torch.where(over_lo, torch.nextafter(lo, x0), lo)
        hi = torch.where(over_hi, torch.nextafter(hi, x0), hi)
    return lo, hi


def into_ball(points: torch.Tensor, centre: torch.Tensor, norm: str, radius: torch.Tensor) -> torch.Tensor:
    """``points`` (A, K, n), already projected onto the L1/L2 balls of ``radius`` (A, 1) around
    ``centre`` (A, 1, n), scaled inward by a few ulps where their distance still exceeds the
    radius as the searches measure it (in the points' dtype, or in float64): a float32
    projection onto the L1 sphere lands outside by rounding for about a quarter of its points,
    onto the L2 sphere for about a tenth. Toward the centre, so they stay in any box that holds it."""
    if norm not in ("l1", "l2"):
        return points
    eps = torch.finfo(points.dtype).eps
    r = torch.as_tensor(radius).to(torch.float64)
    for k in range(4):
        delta = (points - centre).detach()
        over = torch.from_numpy(distance_np(delta.numpy(), norm)).to(torch.float64) > r
        if points.dtype != torch.float64:  # the float64 sum of the same offsets, as DeepGame measures
            over |= torch.from_numpy(distance_np(delta.to(torch.float64).numpy(), norm)) > r
        if not bool(over.any()):
            break
        points = torch.where(over[..., None], centre + delta * (1 - 4 * eps * 4 ** k), points)
    return points
