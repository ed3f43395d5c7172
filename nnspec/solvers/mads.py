"""Mesh Adaptive Direct Search (Audet & Dennis 2006) for many problems at once.

``BatchedMads`` runs P independent bound-constrained minimisations in lock-step through an
ask/tell interface: ``ask()`` stacks every SEARCH and POLL point of every active problem into one
tensor, the caller evaluates them all with one model call (DeepQuant's tensor parallelism, within
an iteration and across inputs), and ``tell()`` applies the MADS updates.

Per iteration and problem:
  * SEARCH: a speculative step along the last success; steps along a simplex-gradient estimate
    from the last poll (the poll points are finite differences along nearly orthogonal directions,
    so they give the gradient's projection on their span for free): sign steps, which suit box and
    L-inf geometry, and a scaled gradient step; points drawn in the poll frame; and points drawn
    uniformly in the whole box (global exploration); all rounded to the mesh;
  * POLL: directions ``[I, -I]`` (GPS, the paper's D) or OrthoMADS 2n directions ``[H, -H]``
    from a Householder matrix of a fresh random unit vector (dense in the limit), optionally a
    random subset of them for high dimensions, scaled by the poll size and rounded to the mesh;
  * update: success (a strictly better point) moves the incumbent and doubles the poll size
    (capped at 1); failure halves it. Mesh size = min(poll, poll^2), as in OrthoMADS.

Search and poll points are evaluated together in one batch (NOMAD's "MegaSearchPoll"): with a
network as the black box, one larger call is cheaper than two calls, at the price of the queries
an opportunistic poll would have skipped. Coordinates are scaled so that a poll size of 1 spans
the half-width of each variable's box. Points outside the box are clipped to it; an optional
``project`` maps candidates into a further feasible set (an L1 or L2 ball).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import torch

from nnspec.solvers.result import SolverResult, StopReason, TracePoint

GRADIENT_STEPS = (0.5, 1.0, 2.0, 2.0)  # sign steps of these lengths, then one scaled-gradient step
Projection = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (points (P,K,n), active idx) -> points


@dataclass(frozen=True, slots=True)
class MadsOptions:
    max_evals: int = 1000  # per problem, the starting point included
    max_seconds: float = 0.0  # 0: no limit
    poll: str = "orthomads"  # orthomads | gps
    directions: int = 0  # poll directions per iteration; 0: all 2n
    search: int = 8  # search points per iteration (besides the speculative step)
    initial_poll: float = 0.5
    tolerance: float = 1e-6
    target: float = -math.inf  # stop a problem once its best value is below this
    seed: int = 0


class BatchedMads:
    """MADS on P problems in lock-step. Shapes: x0, lower, upper are (P, n)."""

    def __init__(self, x0: torch.Tensor, f0: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
                 options: MadsOptions, project: Projection | None = None):
        self.opt = options
        self.lower, self.upper = lower, upper
        self.half = ((upper - lower) / 2).clamp_min(1e-12)
        self.origin = x0.clone()  # the mesh is anchored at the starting point
        self.project = project
        self.x = x0.clone()
        self.f = f0.clone()
        P, n = x0.shape
        self.n = n
        self.poll_size = torch.full((P,), options.initial_poll, dtype=x0.dtype)
        self.last_step = torch.zeros_like(x0)
        self.grad = torch.zeros_like(x0)  # simplex-gradient estimate from the last poll
        self.active = torch.ones(P, dtype=torch.bool)
        self.stop: list[StopReason | None] = [None] * P
        self.nfev = torch.ones(P, dtype=torch.long)  # f0 counts as one evaluation
        self.nit = torch.zeros(P, dtype=torch.long)
        # per iteration: (active indices, nfev, f, poll size) snapshots; expanded in results()
        self._snapshots: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = [
            (torch.arange(x0.shape[0]), self.nfev.clone(), self.f.clone(), self.poll_size.clone())]
        self.gen = torch.Generator().manual_seed(options.seed)
        self.started = time.perf_counter()
        self._pending: tuple[torch.Tensor, torch.Tensor, int] | None = None
        self._check_targets()

    # ------------------------------------------------------------------ ask / tell

    @property
    def points_per_iteration(self) -> int:
        return self._poll_count + self.opt.search + 1 + len(GRADIENT_STEPS)

    @property
    def _poll_count(self) -> int:
        return 2 * self.n if self.opt.directions <= 0 else min(self.opt.directions, 2 * self.n)

    def done(self) -> bool:
        return not bool(self.active.any())

    def ask(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The active problems' indices (A,) and their candidate points (A, K, n)."""
        self._stop_exhausted()
        idx = self.active.nonzero().flatten()
        if idx.numel() == 0:
            return idx, torch.empty(0, self.points_per_iteration, self.n, dtype=self.x.dtype)
        x, half, ps = self.x[idx], self.half[idx], self.poll_size[idx]
        mesh = torch.minimum(ps, ps * ps)
        steps = torch.cat([self._poll_steps(len(idx)), self._search_steps(idx)], dim=1)  # (A, K, n), in half-widths
        cand = x[:, None, :] + steps * ps[:, None, None] * half[:, None, :]
        cand = self._snap(cand, idx, mesh)
        cand = torch.maximum(torch.minimum(cand, self.upper[idx, None, :]), self.lower[idx, None, :])
        if self.project is not None:
            cand = self.project(cand, idx)
        self._pending = (idx, cand, cand.shape[1], x.clone())
        return idx, cand

    def tell(self, values: torch.Tensor) -> None:
        """Objective values (A, K) for the points of the last ``ask``."""
        assert self._pending is not None, "tell() without ask()"
        idx, cand, k, x_old = self._pending
        self._pending = None
        values = torch.where(torch.isnan(values), torch.full_like(values, math.inf), values)
        self._update_gradient(idx, cand[:, : self._poll_count], values[:, : self._poll_count], x_old)
        best_val, best_at = values.min(dim=1)
        improved = best_val < self.f[idx]
        chosen = cand[torch.arange(len(idx)), best_at]
        win = idx[improved]
        self.last_step[win] = chosen[improved] - self.x[win]
        self.x[win] = chosen[improved]
        self.f[win] = best_val[improved]
        self.poll_size[idx] = torch.where(improved, (self.poll_size[idx] * 2).clamp_max(1.0), self.poll_size[idx] / 2)
        self.nfev[idx] += k
        self.nit[idx] += 1
        self._snapshots.append((idx, self.nfev[idx].clone(), self.f[idx].clone(), self.poll_size[idx].clone()))
        self._check_targets()
        small = self.active & (self.poll_size < self.opt.tolerance)
        self._deactivate(small, StopReason.POLL_SIZE)

    def traces(self) -> list[tuple[TracePoint, ...]]:
        out: list[list[TracePoint]] = [[] for _ in range(self.x.shape[0])]
        for idx, nfev, f, ps in self._snapshots:
            for p, q, v, z in zip(idx.tolist(), nfev.tolist(), f.tolist(), ps.tolist()):
                out[p].append(TracePoint(q, v, z))
        return [tuple(t) for t in out]

    def results(self) -> list[SolverResult]:
        traces = self.traces()
        return [SolverResult(self.x[p].clone(), float(self.f[p]), int(self.nfev[p]), int(self.nit[p]),
                             self.stop[p] or StopReason.CALLBACK, traces[p])
                for p in range(self.x.shape[0])]

    def stop_all(self, reason: StopReason) -> None:
        self._deactivate(self.active.clone(), reason)

    # ------------------------------------------------------------------ internals

    def _deactivate(self, mask: torch.Tensor, reason: StopReason) -> None:
        for p in mask.nonzero().flatten().tolist():
            if self.active[p]:
                self.active[p] = False
                self.stop[p] = reason

    def _check_targets(self) -> None:
        self._deactivate(self.active & (self.f < self.opt.target), StopReason.TARGET)

    def _stop_exhausted(self) -> None:
        over = self.active & (self.nfev + self.points_per_iteration > self.opt.max_evals)
        self._deactivate(over, StopReason.BUDGET)
        if self.opt.max_seconds > 0 and time.perf_counter() - self.started > self.opt.max_seconds:
            self.stop_all(StopReason.TIME)

    def _update_gradient(self, idx, poll, values, x_old) -> None:
        """g ~ sum_i (f(x + d_i) - f(x)) d_i / |d_i|^2 over the poll displacements d_i: exact for a
        linear f and orthogonal d_i (the projection of the gradient on their span)."""
        delta = poll - x_old[:, None, :]
        norm2 = (delta * delta).sum(-1)
        diff = values - self.f[idx][:, None]
        ok = torch.isfinite(diff) & (norm2 > 0)
        coef = torch.where(ok, diff / norm2.clamp_min(torch.finfo(norm2.dtype).tiny), torch.zeros_like(diff))
        self.grad[idx] = (coef[:, :, None] * delta).sum(1).to(self.grad.dtype)

    def _poll_steps(self, count: int) -> torch.Tensor:
        """(count, D, n) unit poll directions (L-inf norm 1): D of the 2n columns of [B, -B], B the
        identity (GPS) or a Householder matrix I - 2 v v^T of a fresh random unit v (OrthoMADS).
        Only the chosen columns are built: H e_j = e_j - 2 v v_j, so a subset costs D n, not n^2."""
        n, d = self.n, self._poll_count
        if d < 2 * n:
            cols = torch.rand(count, 2 * n, generator=self.gen).argsort(dim=1)[:, :d]
        else:
            cols = torch.arange(2 * n).expand(count, -1)
        j, sign = cols % n, torch.where(cols < n, 1.0, -1.0).to(self.x.dtype)
        basis = torch.zeros(count, d, n, dtype=self.x.dtype)
        basis.scatter_(2, j[:, :, None], 1.0)
        if self.opt.poll != "gps":
            v = torch.randn(count, n, generator=self.gen, dtype=self.x.dtype)
            v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)
            basis -= 2 * v.gather(1, j)[:, :, None] * v[:, None, :]
            basis /= basis.abs().amax(dim=2, keepdim=True).clamp_min(1e-12)
        return basis * sign[:, :, None]

    def _search_steps(self, idx: torch.Tensor) -> torch.Tensor:
        """(A, S + 1 + G, n): the speculative step, the gradient steps, local and global random points."""
        count, n, s = len(idx), self.n, self.opt.search
        ps = self.poll_size[idx][:, None]
        speculative = (2 * self.last_step[idx] / (self.half[idx] * ps)).clamp(-4, 4)
        g = self.grad[idx] * self.half[idx]  # in half-width units
        sign = -torch.sign(g)
        scaled = -g / g.abs().amax(dim=1, keepdim=True).clamp_min(torch.finfo(g.dtype).tiny)
        model_steps = torch.stack([sign * a for a in GRADIENT_STEPS[:-1]] + [scaled * GRADIENT_STEPS[-1]], dim=1)
        local = (torch.rand(count, s - s // 2, n, generator=self.gen, dtype=self.x.dtype) * 2 - 1)
        # global points: anywhere in the box, expressed as steps from the incumbent
        u = torch.rand(count, s // 2, n, generator=self.gen, dtype=self.x.dtype)
        target = self.lower[idx, None, :] + u * (self.upper[idx] - self.lower[idx])[:, None, :]
        globl = (target - self.x[idx, None, :]) / (self.half[idx, None, :] * ps[:, :, None])
        return torch.cat([speculative[:, None, :], model_steps, local, globl], dim=1)

    def _snap(self, cand: torch.Tensor, idx: torch.Tensor, mesh: torch.Tensor) -> torch.Tensor:
        """Round candidates to the mesh origin + mesh * half * Z^n."""
        unit = (mesh[:, None, None] * self.half[idx, None, :]).clamp_min(1e-12)
        origin = self.origin[idx, None, :]
        return origin + torch.round((cand - origin) / unit) * unit


def minimize_mads(f: Callable[[torch.Tensor], torch.Tensor], x0: torch.Tensor, lower: torch.Tensor,
                  upper: torch.Tensor, options: MadsOptions = MadsOptions(),
                  project: Projection | None = None) -> SolverResult:
    """Minimise a batched black box ``f: (K, n) -> (K,)`` over the box [lower, upper] from x0."""
    f0 = f(x0[None])[0:1]
    solver = BatchedMads(x0[None].clone(), f0, lower[None], upper[None], options, project)
    while not solver.done():
        idx, cand = solver.ask()
        if idx.numel() == 0:
            break
        solver.tell(f(cand[0])[None])
    return solver.results()[0]
