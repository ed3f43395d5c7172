"""Projections onto norm balls, batched over rows: (B, n) -> (B, n)."""

from __future__ import annotations

import torch


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
