"""The paper's black-box phases (DeepQuant, sections 4-5), run by tensor-parallel MADS for all
centres at once: the violation search (minimise s), the Lipschitzian metric (maximise the slope
|s(x) - s(y)| / ||x - y||), the witnesses' refinement (a line search toward the centre, then
searches in shrinking balls) and, for a range property, the lowest and highest values. L1/L2 balls:
projection onto the ball or the paper's augmented Lagrangian (``constraint=auglag``).

A part of ``_Quantification`` (``nnspec.backends.quant.quantification``): its methods read the
centres, the search boxes and the tracker, and evaluate through ``evaluate``."""

from __future__ import annotations

import math

import torch

from nnspec.backends.quant.tracker import WITNESS_SLACK
from nnspec.properties.regions import distance
from nnspec.solvers import auglag
from nnspec.solvers.mads import BatchedMads, MadsOptions
from nnspec.solvers.projection import into_ball, project_ball
from nnspec.solvers.region_lp import ITERATIONS

# Shares of the budget: violation search, then Q^ for centres without a violation; centres with one
# refine their witness with what is left, less a reserve for a final Q^ search.
PHASE_SHARE = {"search": 0.5, "lipschitz": 0.35, "final_lipschitz": 0.0}
MAX_SHRINK = 0.97  # the finest shrinking-ball step: look within 97% of the closest witness
REFINE_ROUNDS = 8  # each shrinking-ball round may use 1/8 of the refinement budget left
STALL_ROUNDS = 3  # a centre stops refining after this many fruitless rounds at the finest step


class MadsPhases:
    """MADS's phases of ``_Quantification`` (see the module's docstring)."""

    def _mads_options(self, max_evals: int, target: float, seed_offset: int) -> MadsOptions:
        o = self.opts
        remaining_time = self._time_left()
        return MadsOptions(max_evals=max_evals, max_seconds=remaining_time, poll=o["poll"],
                           directions=o["directions"], search=o["search"], tolerance=o["tolerance"],
                           target=target, seed=o["seed"] * 7919 + seed_offset)

    def _run_mads(self, idx: torch.Tensor, start: torch.Tensor, objective, max_evals: int, target: float,
                  seed_offset: int, stops: list[str]) -> BatchedMads | None:
        """Run MADS for the centres idx from start (A, f); objective(idx, y) -> values (A', K)."""
        if idx.numel() == 0 or max_evals < 2:
            return None
        opts = self._mads_options(max_evals, target, seed_offset)
        f0 = objective(idx, start[:, None, :])[:, 0]
        project = self._projection(idx) if self.ball.norm in ("l1", "l2") else None
        solver = BatchedMads(start.clone(), f0, self.box_lo[idx], self.box_hi[idx], opts, project)
        while not solver.done():
            active, cand = solver.ask()
            if active.numel() == 0:
                break
            solver.tell(objective(idx[active], cand))
        for j, res in enumerate(solver.results()):
            stops[int(idx[j])] = res.stop.value
        return solver

    def _projection(self, idx: torch.Tensor):
        if self.opts["constraint"] == "auglag":
            return None
        norm = self.ball.norm
        x0f = self.x0[:, self.free]

        def project(cand: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
            rows = idx[active]
            centre = x0f[rows, None, :]
            r = self.radius[rows][:, None]
            moved = centre + project_ball(cand - centre, norm, r)
            moved = torch.maximum(torch.minimum(moved, self.box_hi[rows, None, :]), self.box_lo[rows, None, :])
            return into_ball(moved, centre, norm, r)  # linf: the box is the ball already

        return project

    def _with_constraint(self, objective):
        """For constraint=auglag on L1/L2: wrap an objective in the modified barrier, outer loop
        driven by ``_auglag_rounds``; otherwise the objective itself."""
        if self.ball.norm not in ("l1", "l2") or self.opts["constraint"] != "auglag":
            return objective, None
        state = {"lam": torch.ones(self.P, dtype=torch.float64), "shift": 0.5 * self.radius.to(torch.float64)}

        def wrapped(idx, y):
            values, dist = objective(idx, y, with_dist=True)
            c = dist - self.radius[idx, None]
            return auglag.barrier(values, c, state["lam"][idx], state["shift"][idx])

        return wrapped, state

    def _solve(self, idx, start, objective, budget, target, seed, stops) -> None:
        """One minimisation for the centres idx, with the constraint handling of the ball."""
        wrapped, state = self._with_constraint(objective)
        if state is None:
            self._run_mads(idx, start, lambda i, y: objective(i, y), budget, target, seed, stops)
            return
        rounds = 4
        x = start.clone()
        for r in range(rounds):
            solver = self._run_mads(idx, x, wrapped, max(budget // rounds, 2), target, seed + r, stops)
            if solver is None:
                return
            x = solver.x.clone()
            full = self._embed(idx, x[:, None, :])[:, 0]
            c = distance(full - self.x0[idx], self.ball.norm) - self.radius[idx]
            state["lam"][idx], state["shift"][idx] = auglag.update(state["lam"][idx], state["shift"][idx], c)

    def _phase_search(self, stops: list[str]) -> None:
        t = self.tracker
        idx = ((t.s0 >= 0) & torch.isinf(t.best_dist)).nonzero().flatten()  # not yet violated
        budget = int(self.budget * PHASE_SHARE["search"])
        if idx.numel():
            budget = min(budget, int(self._remaining()[idx].min()))

        def objective(i, y, with_dist=False):
            s, dist = self.evaluate(i, y)
            return (s, dist) if with_dist else s

        self._solve(idx, self.x0[idx][:, self.free], objective, budget, -WITNESS_SLACK, 1, stops)

    def _phase_lipschitz(self, stops: list[str], after_refine: bool = False) -> None:
        """Maximise the slope: for centres without a violation (a share of the budget), and after
        refinement for those with one (what is left), so that every Q^ gets a dedicated search."""
        t = self.tracker
        if after_refine:
            idx = ((t.s0 >= 0) & torch.isfinite(t.best_dist)).nonzero().flatten()
            budget = int(self._remaining()[idx].min()) if idx.numel() else 0
        else:
            idx = ((t.s0 >= 0) & torch.isinf(t.best_dist)).nonzero().flatten()
            budget = int(self.budget * PHASE_SHARE["lipschitz"])
            budget = min(budget, int(self._remaining()[idx].min()) if idx.numel() else 0)

        def objective(i, y, with_dist=False):
            s, dist = self.evaluate(i, y)
            slope = -(s - t.s0[i, None]).abs() / dist.clamp_min(1e-12)
            slope = torch.where(dist > 0, slope, torch.zeros_like(slope))
            return (slope, dist) if with_dist else slope

        self._solve(idx, self.x0[idx][:, self.free], objective, budget, -math.inf, 2 + 20 * after_refine, stops)

    def _phase_refine(self, stops: list[str]) -> None:
        """Closer witnesses: a line search toward the centre, then shrinking balls. After a witness
        at distance u, search for any violation inside a ball of radius f * u (minimising s, a
        well-behaved objective, unlike the distance under an s < 0 barrier), which can jump to a
        nearer decision region. f starts at 1/2 and moves halfway back to 1 (at most MAX_SHRINK)
        after a round that finds nothing: a bisection on the radius, then polishing at the finest
        step, per centre, until STALL_ROUNDS fruitless rounds or the budget ends."""
        t = self.tracker
        idx = (torch.isfinite(t.best_dist) & (t.best_dist > 0)).nonzero().flatten()
        if idx.numel() == 0 or not self.opts["refine"]:
            return
        self._line_search(idx)
        per_round = 3 * (self._mads_options(10**9, 0.0, 0).search + 6 + self._directions())
        factor = torch.full((self.P,), 0.5, dtype=torch.float64)
        stalls = torch.zeros(self.P, dtype=torch.long)  # failed rounds in a row at the finest factor
        round_no = 0
        # kept for Q^ after refinement, and for the region LP's candidates
        reserve = int(self.budget * PHASE_SHARE["final_lipschitz"]) + ITERATIONS
        while idx.numel():
            remaining = int(self._remaining()[idx].min()) - reserve
            if remaining < per_round:
                break
            before = t.best_dist[idx].clone()
            f = factor[idx]
            self._set_radius(idx, before * f)
            start = self.x0[idx] + (t.best_x[idx] - self.x0[idx]) * f[:, None].to(self.dt)
            budget = max(per_round, remaining // REFINE_ROUNDS)

            def objective(i, y, with_dist=False):
                s, dist = self.evaluate(i, y)
                return (s, dist) if with_dist else s

            self._solve(idx, start[:, self.free], objective, budget, -WITNESS_SLACK, 10 + round_no, stops)
            improved = t.best_dist[idx] < before
            if improved.any():
                self._line_search(idx[improved])
            failed = idx[~improved]
            stalls[failed] += (factor[failed] >= MAX_SHRINK).long()
            stalls[idx[improved]] = 0
            factor[failed] = ((1 + factor[failed]) / 2).clamp_max(MAX_SHRINK)
            idx = idx[stalls[idx] < STALL_ROUNDS]
            round_no += 1
        self._set_radius(torch.arange(self.P), torch.full((self.P,), float(self.ball.radius), dtype=self.dt))

    def _directions(self) -> int:
        d = self.opts["directions"]
        n = len(self.free)
        return 2 * n if d <= 0 else min(d, 2 * n)

    def _line_search(self, idx: torch.Tensor, points: int = 12, rounds: int = 2) -> None:
        """Bisection-like scan of the segment centre -> witness, all centres in one call per round."""
        t = self.tracker
        lo = torch.zeros(len(idx), dtype=torch.float64)
        hi = torch.ones(len(idx), dtype=torch.float64)
        for _ in range(rounds):
            if int(self._remaining()[idx].min()) < points:
                return
            ts = lo[:, None] + (hi - lo)[:, None] * torch.linspace(0, 1, points + 2, dtype=torch.float64)[None, 1:-1]
            start = self.x0[idx][:, self.free]
            target = t.best_x[idx][:, self.free]
            y = start[:, None, :] + ts[:, :, None] * (target - start)[:, None, :]
            s, _ = self.evaluate(idx, y)
            viol = s < -WITNESS_SLACK
            first = torch.where(viol.any(dim=1), viol.to(torch.float64).argmax(dim=1), torch.full_like(lo, points).long())
            ar = torch.arange(len(idx))
            prev = torch.where(first > 0, ts[ar, (first - 1).clamp_min(0)], lo)
            found = viol.any(dim=1)
            hi = torch.where(found, ts[ar, first.clamp_max(points - 1)], hi)
            lo = torch.where(found, prev, lo)

    def _phase_range(self, stops: list[str]) -> None:
        half = int(self.budget * 0.5)
        idx = torch.arange(self.P)
        start = self.x0[:, self.free]

        def low(i, y, with_dist=False):
            s, dist = self.evaluate(i, y)
            return (s, dist) if with_dist else s

        def high(i, y, with_dist=False):
            s, dist = self.evaluate(i, y)
            return (-s, dist) if with_dist else -s

        self._solve(idx, start, low, half, -math.inf, 4, stops)
        self._solve(idx, start, high, int(self._remaining().min()), -math.inf, 5, stops)
