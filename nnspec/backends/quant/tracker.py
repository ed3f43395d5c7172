"""What every evaluated point teaches, per centre: the largest slope seen (Q^), the lowest and
highest values of s, the closest violation (a witness once confirmed), the queries spent, and a
snapshot per evaluation for the convergence plots; the radius estimate min(d, s(x) / Q^, closest
witness) that they give."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

# A point counts as a witness only with s below -WITNESS_SLACK, so that the re-evaluation that
# confirms it (another batch size, maybe another runtime) cannot flip it by float round-off.
WITNESS_SLACK = 1e-5


@dataclass
class Tracker:
    """Everything learnt from evaluated points, per centre."""

    s0: torch.Tensor  # (P,)
    q_hat: torch.Tensor  # (P,) largest slope seen
    min_s: torch.Tensor  # (P,)
    max_s: torch.Tensor  # (P,)
    argmin: torch.Tensor  # (P, n)
    argmax: torch.Tensor  # (P, n)
    best_dist: torch.Tensor  # (P,) closest violation, inf if none
    best_x: torch.Tensor  # (P, n)
    best_s: torch.Tensor  # (P,)
    queries: torch.Tensor  # (P,) long
    snapshots: list[tuple[np.ndarray, ...]]  # per evaluation: idx, queries, min_s, q_hat, best_dist


def rows_of(full: torch.Tensor, a: np.ndarray, k: np.ndarray) -> torch.Tensor:
    """Points ``full[a[i], k[i]]`` of (A, K, n) evaluations, indexed by numpy arrays."""
    return full[torch.from_numpy(a), torch.from_numpy(k)]


def radius_estimate(s0: float, q_hat: float, best_dist: float, radius: float) -> float:
    """min(d, s(x) / Q^, closest witness); 0 when the centre itself violates."""
    if s0 < 0:
        return 0.0
    est = radius if q_hat <= 0 else min(radius, s0 / q_hat)
    return min(est, best_dist)


def finite(v: float) -> float | None:
    return v if math.isfinite(v) else None
