"""DeepQuant quantification by tensor-parallel MADS (paper 000, sections 4-5).

For every centre x of the task, all at once (one model call per iteration for all centres):

1. *violation search*: MADS minimises s over the region, stopping a centre once s < 0;
2. *Lipschitzian metric*: MADS maximises |s(x) - s(y)| / ||x - y|| (the paper's objective w,
   inverted) for the centres without a violation;
3. *witness refinement*: for centres with a violation, a line search along centre -> witness and a
   MADS that minimises the distance subject to s < 0 (extreme barrier).

Every evaluated point in the region feeds both Q^ (the largest slope seen) and the witness tracker
(the closest point with s < 0). The radius estimate is min(d, s(x) / Q^, closest witness); the
closest witness's distance is an upper bound. None of that is a proof: Q^ is a sample maximum. The
proof, where there is one: for a confidence gap on logits (or probabilities, margin 0), the bound engine
(IBP, CROWN or alpha-CROWN, ``nnspec.bounds``) certifies a box radius around each centre (``lower``; a
ball inside it is proven).
L-inf regions are boxes. L1/L2 regions are handled by projection onto the ball (clipped to the
domain, which keeps points feasible) or by the paper's augmented Lagrangian (``constraint=auglag``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from nnspec.backends.base import BoundTask
from nnspec.backends.registry import MADS
from nnspec.backends.soundness import bound_method, proved_lower
from nnspec.errors import BudgetExhausted, ModelError, SpecError
from nnspec.models.model import Model, label_score
from nnspec.properties.expressions import Centres, ConfidenceGap
from nnspec.properties.regions import distance, distance_np
from nnspec.results.records import Outcome, RadiusBounds, Verdict, Witness
from nnspec.solvers import auglag
from nnspec.solvers.gradient import GradientOptions, closest_starts, minimal_norm, vertex_walk
from nnspec.solvers.gradient import search as gradient_search
from nnspec.solvers.mads import BatchedMads, MadsOptions
from nnspec.solvers.projection import box_in_ball, into_ball, project_ball
from nnspec.solvers.region_lp import ITERATIONS, RegionLP

# Shares of the budget: violation search, then Q^ for centres without a violation; centres with one
# refine their witness with what is left, less a reserve for a final Q^ search.
PHASE_SHARE = {"search": 0.5, "lipschitz": 0.35, "final_lipschitz": 0.0}
# Shares of the budget for the gradient-guided stage (white box), run first where the model has
# usable gradients: a projected-gradient search over the ball, then a minimal-norm bisection.
GRADIENT_SHARE = {"search": 0.2, "refine": 0.25, "shrink": 0.05}
SHRINK, SHRINK_ROUNDS = 0.9, 6  # gradient searches in balls a tenth inside the closest violation, then closer
SHRINK_STEPS = 20  # per restart of a shrinking-ball round
# two more restarts per round start from the closest witness scaled into the round's ball, with
# the offsets of a random FLIP_SHARE of its coordinates reversed (the same norm): the closer
# regions of the demo CNN lie a few coordinates' signs away from the one a walk ended in
WITNESS_RESTARTS, FLIP_SHARE = 2, 0.25
MIN_NORM_STARTS = 4  # minimal-norm walks per centre from violations found beyond the ball
MIN_NORM_STEPS = 200  # per walk: they converge within this; more would only cost Python-loop time
# A point counts as a witness only with s below -WITNESS_SLACK, so that the re-evaluation that
# confirms it (another batch size, maybe another runtime) cannot flip it by float round-off.
WITNESS_SLACK = 1e-5
MAX_SHRINK = 0.97  # the finest shrinking-ball step: look within 97% of the closest witness
REFINE_ROUNDS = 8  # each shrinking-ball round may use 1/8 of the refinement budget left
STALL_ROUNDS = 3  # a centre stops refining after this many fruitless rounds at the finest step


@dataclass
class _Tracker:
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


def _rows(full: torch.Tensor, a: np.ndarray, k: np.ndarray) -> torch.Tensor:
    """Points ``full[a[i], k[i]]`` of (A, K, n) evaluations, indexed by numpy arrays."""
    return full[torch.from_numpy(a), torch.from_numpy(k)]


class QuantBackend:
    info = MADS

    def run(self, task: BoundTask, model: Model) -> list[Outcome]:
        return _Quantification(task, model).run()


class _Quantification:
    def __init__(self, task: BoundTask, model: Model):
        self.task, self.model = task, model
        self.prop = task.prop
        self.ball = task.prop.region
        self.opts = task.options
        self.started = time.perf_counter()
        P = task.centres.shape[0]
        self.P = P
        self.shape = tuple(task.centres.shape[1:])
        # Points live in the model's dtype: exactly what the model evaluates (distances are measured
        # on the evaluated point), and half the memory traffic of float64 for float32 models.
        # Values of s, slopes and the estimates stay float64.
        self.dt = model.dtype
        self.x0 = task.centres.reshape(P, -1).to(self.dt)
        n = self.x0.shape[1]
        before = model.queries
        masks = self._allowed(task, model, n)  # (P, n): what each centre's region may change
        self.masks = masks
        self.partition_queries = (model.queries - before) // P  # saliency rankings, per centre
        self.free = (masks.sum(0) > 0).nonzero().flatten()  # dimensions the search may move
        self.all_free = len(self.free) == masks.shape[1]  # then a point's free coordinates are the point
        fm = masks[:, self.free] > 0
        self.fmask = None if bool(fm.all()) else fm  # per-centre restriction (a feature of each input)
        self.dom_lo = task.lower.to(self.dt).expand(n)
        self.dom_hi = task.upper.to(self.dt).expand(n)
        self.radius = torch.full((P,), float(self.ball.radius), dtype=self.dt)  # per centre
        self.box_lo = torch.empty(P, len(self.free), dtype=self.dt)
        self.box_hi = torch.empty_like(self.box_lo)
        self._set_radius(torch.arange(P), self.radius.clone())
        self.budget = int(self.opts["budget"]) - self.partition_queries  # the ranking is paid from the budget
        self.is_range = self.prop.kind == "range"

    def _set_radius(self, idx: torch.Tensor, radius: torch.Tensor) -> None:
        """Search the centres idx in balls of the given radii (the ball of the spec, or a smaller
        one when looking for a closer witness); the box is the ball's bounding box in the domain."""
        radius = radius.to(self.dt)
        self.radius[idx] = radius
        lo, hi = self._ball_box(idx, radius)
        self.box_lo[idx], self.box_hi[idx] = lo[:, self.free], hi[:, self.free]
        if self.fmask is not None:  # dimensions outside a centre's feature stay at the centre
            x0f = self.x0[idx][:, self.free]
            self.box_lo[idx] = torch.where(self.fmask[idx], self.box_lo[idx], x0f)
            self.box_hi[idx] = torch.where(self.fmask[idx], self.box_hi[idx], x0f)

    def _ball_box(self, idx: torch.Tensor, radius: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The bounding box of the balls of ``radius`` around the centres idx in the domain, (A, n)
        each, its corners inside the balls as the searches measure distances (``box_in_ball``)."""
        return box_in_ball(self.x0[idx], radius.to(self.dt)[:, None], self.dom_lo, self.dom_hi)

    def _allowed(self, task: BoundTask, model: Model, n: int) -> torch.Tensor:
        rows = []
        for p in range(task.centres.shape[0]):
            try:
                mask = self.ball.allowed(self.shape, task.centres[p], label_score(model, self.shape, int(task.labels[p])))
            except ValueError as err:
                raise SpecError.at(self.prop.span, str(err)) from None
            rows.append(torch.ones(n, dtype=self.dt) if mask is None else mask.to(self.dt))
        return torch.stack(rows)

    # ------------------------------------------------------------------ evaluation

    def _embed(self, idx: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Free-coordinate points y (A, K, f) -> full points (A, K, n)."""
        if self.all_free:
            return y.to(self.x0.dtype)
        full = self.x0[idx, None, :].expand(-1, y.shape[1], -1).clone()
        full[:, :, self.free] = y.to(full.dtype)
        return full

    def _outputs(self, idx: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
        a, k, n = full.shape
        out = self.model(full.reshape((a * k,) + self.shape).to(self.model.dtype))
        return out.reshape(a, k, -1).to(torch.float64)

    def _s(self, idx: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
        if self._every(idx):
            return self.s_fn(outputs)
        padded = torch.zeros((self.P,) + tuple(outputs.shape[1:]), dtype=outputs.dtype)
        padded[idx] = outputs
        return self.s_fn(padded)[idx]

    def evaluate(self, idx: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """s and distance at points y (A, K, f); records every point in the region."""
        full = self._embed(idx, y)
        s = self._s(idx, self._outputs(idx, full))
        dist = self._distances(idx, full)
        self._record(idx, full, s, dist)
        return s, dist

    def _distances(self, idx: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
        """The norm of each point's offset from its centre, (A, K, n) -> (A, K), in numpy."""
        x0 = self.x0.numpy()
        return torch.from_numpy(distance_np(full.numpy() - (x0 if self._every(idx) else x0[idx.numpy()])[:, None, :],
                                            self.ball.norm))

    def _every(self, idx: torch.Tensor) -> bool:
        """Whether ``idx`` (ascending, as every caller's subsets are) is every centre."""
        ix = idx.numpy()
        return len(ix) == self.P and (self.P == 0 or (ix[0] == 0 and ix[-1] == self.P - 1))

    def _record(self, idx, full, s, dist) -> None:
        # called after every model call (hundreds per input in the gradient stage): the (A, K)
        # arithmetic runs in numpy on views of the tracker's tensors (a microsecond an operation
        # where a torch operation costs ten), the (A, n) copies only where something improved
        t = self.tracker
        ix, sn, dn = idx.numpy(), s.numpy(), dist.numpy()
        ar = np.arange(len(ix))
        inside = dn <= self.ball.radius * (1 + 1e-9)
        queries = t.queries.numpy()
        queries[ix] += sn.shape[1]
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = np.where(inside & (dn > 0), np.abs(sn - t.s0.numpy()[ix, None]) / np.maximum(dn, 1e-12),
                             0.0).max(axis=1)
        q_hat = t.q_hat.numpy()
        raised = slope > q_hat[ix]
        if raised.any():
            q_hat[ix[raised]] = slope[raised]
        min_s = t.min_s.numpy()
        low = np.where(inside, sn, math.inf)
        k = low.argmin(axis=1)
        better = low[ar, k] < min_s[ix]
        if better.any():
            min_s[ix[better]] = low[ar, k][better]
            t.argmin[ix[better]] = _rows(full, ar[better], k[better])
        best_dist = t.best_dist.numpy()
        if self.is_range:  # the highest value and where: only a range reports them
            high = np.where(inside, sn, -math.inf)
            k = high.argmax(axis=1)
            max_s = t.max_s.numpy()
            higher = high[ar, k] > max_s[ix]
            if higher.any():
                max_s[ix[higher]] = high[ar, k][higher]
                t.argmax[ix[higher]] = _rows(full, ar[higher], k[higher])
        else:
            close = np.where(inside & (sn < -WITNESS_SLACK), dn, math.inf)
            k = close.argmin(axis=1)
            closer = close[ar, k] < best_dist[ix]
            if closer.any():
                best_dist[ix[closer]] = close[ar, k][closer]
                t.best_x[ix[closer]] = _rows(full, ar[closer], k[closer])
                t.best_s.numpy()[ix[closer]] = sn[ar, k][closer]
        # (numpy's fancy indexing copies: the snapshot shares nothing with the tracker)
        t.snapshots.append((ix, queries[ix], min_s[ix], q_hat[ix], best_dist[ix]))

    def _estimate(self, p: int) -> float | None:
        if self.is_range:
            return None
        t = self.tracker
        return _radius_estimate(float(t.s0[p]), float(t.q_hat[p]), float(t.best_dist[p]), self.ball.radius)

    def _traces(self) -> list[list[dict]]:
        """Per-centre traces from the per-evaluation snapshots (kept as arrays while searching)."""
        t, d = self.tracker, self.ball.radius
        out: list[list[dict]] = [[] for _ in range(self.P)]
        s0 = t.s0.tolist()
        for idx, queries, min_s, q_hat, best in t.snapshots:
            for p, q, m, qh, b in zip(idx.tolist(), queries.tolist(), min_s.tolist(), q_hat.tolist(), best.tolist()):
                est = None if self.is_range else _radius_estimate(s0[p], qh, b, d)
                out[p].append({"queries": q, "min_s": m, "q_hat": qh, "estimate": est, "upper": _finite(b)})
        return out

    # ------------------------------------------------------------------ phases

    def run(self) -> list[Outcome]:
        task = self.task
        centre_out = self.model(task.centres.to(self.model.dtype)).to(torch.float64)
        self.centre_out = centre_out
        ref_out = None
        if task.reference is not None:
            ref_out = self.model(task.reference.to(self.model.dtype)).to(torch.float64)
        centres = Centres(task.labels, centre_out, ref_out)
        self.s_fn = self.prop.expression.bind(centres, task.outputs_are_logits)
        s0 = self.s_fn(centre_out[:, None, :])[:, 0]
        P, n = self.x0.shape
        self.tracker = _Tracker(
            s0=s0, q_hat=torch.zeros(P, dtype=torch.float64), min_s=s0.clone(), max_s=s0.clone(),
            argmin=self.x0.clone(), argmax=self.x0.clone(),
            best_dist=torch.full((P,), math.inf, dtype=torch.float64), best_x=self.x0.clone(),
            best_s=torch.zeros(P, dtype=torch.float64), queries=torch.ones(P, dtype=torch.long) + (ref_out is not None) + self.partition_queries,
            snapshots=[])
        if not self.is_range:
            at_centre = s0 < 0
            self.tracker.best_dist[at_centre] = 0.0
            self.tracker.best_s[at_centre] = s0[at_centre]
        stops = ["" for _ in range(P)]
        self.polished = torch.full((P,), math.inf, dtype=torch.float64)  # the witness distance the region LP last saw
        if self.is_range:
            phases = [lambda: self._phase_range(stops)]
        else:
            # the region LP once more after MADS's refinement, for witnesses the gradient stage did
            # not find or that moved since (an L1 ball on a demo digit: the gradient stage found
            # none in l1(6), MADS one at 2.38, the LP from it 1.79)
            phases = [self._phase_gradient, lambda: self._phase_search(stops), lambda: self._phase_lipschitz(stops),
                      lambda: self._phase_refine(stops), self._region_polish_again,
                      lambda: self._phase_lipschitz(stops, after_refine=True)]
        for phase in phases:
            try:
                phase()
            except BudgetExhausted:
                # the task's query budget is a hard cap over all its inputs, and a stage may ask a
                # batch more than its share: the searches are anytime, so the run ends here with
                # everything evaluated so far (recorded as it was evaluated)
                stops[:] = [s or "budget" for s in stops]
                break
        return self._outcomes(centre_out, stops)

    def _remaining(self) -> torch.Tensor:
        return (self.budget - self.tracker.queries).clamp_min(0)

    def _time_left(self) -> float:
        """Seconds left of the task's time limit (``time`` per input), 0.0 without one."""
        if not self.opts.get("time"):
            return 0.0
        return max(self.opts["time"] * self.P - (time.perf_counter() - self.started), 1e-3)

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

    # ------------------------------------------------------------------ gradient-guided stage

    def _value_and_grad(self, idx: torch.Tensor, y: torch.Tensor,
                        targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """s and ds/dy at free-coordinate points y (A, K, f); every point is recorded like the
        MADS evaluations (witnesses, slopes), and counted (one query per point). ``targets``
        (P, K): descend instead on s_j = f_l - f_j - margin toward label j per centre and restart
        (ConfidenceGap.toward; s_j >= s, so its violations are the property's), value and
        gradient of s_j returned, the points still recorded with s."""
        y = y.detach().requires_grad_(True)
        full = self._embed(idx, y)
        a, k, n = full.shape
        out = self.model.forward_grad(full.reshape((a * k,) + self.shape).to(self.model.dtype))
        out = out.reshape(a, k, -1).to(torch.float64)
        if targets is None:
            objective = self._s(idx, out)
        else:
            objective = self.prop.expression.toward(self.task.labels[idx], self.task.outputs_are_logits)(
                out, targets[idx, :k])
        started = time.perf_counter()
        grad, = torch.autograd.grad(objective.sum(), y)
        self.model.seconds += time.perf_counter() - started  # the backward pass is model work too
        with torch.no_grad():
            s = objective.detach() if targets is None else self._s(idx, out.detach())
            if not np.isfinite(s.numpy()).all():
                raise ModelError(f"{self.model.name}: non-finite output during a gradient search")
            full = full.detach()
            self._record(idx, full, s, self._distances(idx, full))
            if not np.isfinite(grad.numpy().sum()):
                grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
        return objective.detach(), grad

    def _runner_up_targets(self, restarts: int) -> torch.Tensor | None:
        """(P, restarts): restart k of centre p aims at the (k mod m)-th most likely other label at
        the centre (m = the other labels), for untargeted confidence gaps; None otherwise."""
        expr = self.prop.expression
        if not isinstance(expr, ConfidenceGap) or expr.target != "untargeted":
            return None
        order = self.centre_out.argsort(dim=1, descending=True)
        others = order[order != self.task.labels[:, None]].reshape(self.P, -1)
        if others.shape[1] < 2:
            return None
        return others[:, torch.arange(restarts) % others.shape[1]]

    def _phase_gradient(self) -> None:
        """White-box search first: where s has a usable gradient at the centre, a batched
        projected-gradient search over the ball (all centres, several restarts), then the
        closest violation by a minimal-norm bisection. Black-box MADS follows in any case."""
        mode = self.opts.get("attack", "auto")
        t = self.tracker
        idx = (t.s0 >= 0).nonzero().flatten()
        self.search_notes = ["search: MADS (derivative-free; attack=mads)"] * self.P if mode == "mads" else \
            ["search: MADS"] * self.P
        if mode == "mads" or idx.numel() == 0 or self.ball.norm == "l0":
            return
        K = GradientOptions().restarts
        if int(self._remaining()[idx].min()) < 4 * K:
            return
        x0f = self.x0[idx][:, self.free]
        _, g = self._value_and_grad(idx, x0f[:, None, :])
        usable = g.abs().flatten(1).sum(1) > 0
        for p, ok in zip(idx.tolist(), usable.tolist()):
            self.search_notes[p] = ("search: projected gradient (white box), then MADS" if ok else
                                    "search: MADS only (the gradient of s is zero at the centre: black box)")
        if mode == "auto":
            idx = idx[usable]
        if idx.numel() == 0:
            return
        if self.ball.norm == "linf" and int(self._remaining()[idx].min()) >= 16 * K:
            vertex_walk(self._value_and_grad, idx, self.box_lo[idx], self.box_hi[idx])  # 2 x 8 queries at most
            if int(self._remaining()[idx].min()) < 4 * K:
                return
        share = min(int(self.budget * GRADIENT_SHARE["search"]), int(self._remaining()[idx].min()))
        steps = GradientOptions().steps
        restarts = int(min(max(K, share // steps), 64))  # more starts, not longer runs, when the budget allows
        steps = max(1, share // restarts)
        # with a time limit, the search has at most half of what is left (MADS follows); without
        # refinement (a verdict needs one violation, not the closest) it stops at the first
        opts = GradientOptions(steps=steps, restarts=restarts, seed=int(self.opts["seed"]),
                               max_seconds=0.5 * self._time_left())
        y, s = gradient_search(self._value_and_grad, idx, self.x0[idx][:, self.free], self.radius[idx],
                               self.box_lo[idx], self.box_hi[idx], self.ball.norm, opts, hint=self._bound_hint(idx),
                               every=True, stop_at=None if self.opts["refine"] else -WITNESS_SLACK)
        inside = self._closest_starts(idx, y, s)
        missed = idx[torch.isinf(t.best_dist[idx])]
        outside = self._beyond_the_ball(missed, restarts)
        for found in (inside, outside):  # walk the closest violations toward the centre
            if found is not None and self.opts["refine"]:
                self._minimal_norm(*found)
        if self.opts["refine"]:
            self._shrinking_balls(idx)
            self._region_polish(idx)

    def _region_polish_again(self) -> None:
        """``_region_polish`` for the centres whose closest witness is new since the last one."""
        t = self.tracker
        if not self.opts["refine"] or self.opts.get("attack", "auto") == "mads":  # white box: not the paper's search
            return
        # new, or 0.1% closer than when polished (smaller moves rarely open a closer region, and on
        # the demo CNN three LPs cost a tenth of a check)
        moved = torch.isfinite(t.best_dist) & (t.best_dist < self.polished * (1 - 1e-3))
        if bool(moved.any()):
            self._region_polish(moved.nonzero().flatten())

    def _region_polish(self, idx: torch.Tensor) -> None:
        """L-inf and L1 balls, logit margins, ReLU chains: each closest witness moved to the
        closest violation of its activation region and of the neighbouring regions that hold it
        there, by linear programming (``nnspec.solvers.region_lp``); every candidate is evaluated
        on the model."""
        expr = self.prop.expression
        if self.ball.norm not in ("linf", "l1") or not isinstance(expr, ConfidenceGap) or \
                not (expr.reading == "logits" or expr.margin == 0):
            return
        t = self.tracker
        rows = idx[torch.isfinite(t.best_dist[idx]) & (t.best_dist[idx] > 0)]
        if rows.numel() == 0 or int(self._remaining()[rows].min()) < ITERATIONS:
            return
        lp = _region_lp(self.model)
        if lp is None:
            return
        labels = self.task.labels
        gap = 4 * WITNESS_SLACK - expr.margin if expr.reading == "logits" else 1e-3
        for p in rows.tolist():
            self.polished[p] = float(t.best_dist[p])
            x0 = self.x0[p].double().numpy()
            witness = t.best_x[p].double().numpy()
            lo = self.dom_lo.double().numpy().copy()
            hi = self.dom_hi.double().numpy().copy()
            fixed = np.ones(len(x0), dtype=bool)
            fixed[self.free.numpy()] = False
            if self.fmask is not None:
                fixed[self.free.numpy()[~self.fmask[p].numpy()]] = True
            lo[fixed], hi[fixed] = x0[fixed], x0[fixed]
            label = int(labels[p])
            if expr.target == "label":
                target = int(expr.target_label)
            elif expr.target == "least_likely":
                target = int(self.centre_out[p].argmin())
            else:
                out = lp.preacts(witness)[1]
                out[label] = -np.inf
                target = int(out.argmax())
            found = lp.polish(x0, witness, lo, hi, label, target, gap, norm=self.ball.norm)
            if found:
                before = float(self.polished[p])
                y = torch.from_numpy(np.stack(found))[:, self.free.numpy()].to(self.dt)
                self.evaluate(rows.new_tensor([p]), y[None])
                after = float(t.best_dist[p])
                if after < before * (1 - 1e-4):  # (smaller moves are the walk's last digits)
                    self.search_notes[p] += f"; the region LP moved the closest witness from {before:.6g} to {after:.6g}"

    def _shrinking_balls(self, idx: torch.Tensor) -> None:
        """A walk ends in the decision region it started in; a closer region may exist. Search a
        ball a tenth smaller than the closest violation (restarts at random and at vertices), and
        walk what it finds. Per centre, a fruitless round moves its factor a third of the way back
        to 1 (0.9, 0.967, 0.989): the exact radius is unknown, and a region just inside the closest
        violation is missed by a ball that is already below the radius."""
        t = self.tracker
        factor = torch.full((self.P,), SHRINK, dtype=torch.float64)
        for round_no in range(SHRINK_ROUNDS):
            rows = idx[torch.isfinite(t.best_dist[idx]) & (t.best_dist[idx] > 0)]
            share = int(self.budget * GRADIENT_SHARE["shrink"])
            steps = SHRINK_STEPS
            restarts = max(2, share // (2 * GradientOptions().steps)) + WITNESS_RESTARTS
            # the search below costs restarts x steps queries per centre, whatever the share says
            if rows.numel() == 0 or int(self._remaining()[rows].min()) < max(2 * share, restarts * steps):
                return
            before = t.best_dist[rows].clone()
            self._set_radius(rows, before * factor[rows].to(before))
            opts = GradientOptions(steps=steps, restarts=restarts, seed=int(self.opts["seed"]) + 31 * (round_no + 1))
            # each restart aims at one of the most likely other labels: the closer region is often
            # where a label other than the runner-up wins (the demo MLP's digit 18: the third label,
            # 4% closer than the runner-up's region, which an untargeted search follows)
            targets = self._runner_up_targets(restarts - WITNESS_RESTARTS)
            if targets is not None:  # the witness's restarts aim like the first ones
                targets = torch.cat([targets, targets[:, torch.arange(WITNESS_RESTARTS) % targets.shape[1]]], 1)
            vg = self._value_and_grad if targets is None else partial(self._value_and_grad, targets=targets)
            centre = self.x0[rows][:, self.free]
            y, s = gradient_search(vg, rows, centre, self.radius[rows], self.box_lo[rows], self.box_hi[rows],
                                   self.ball.norm, opts, every=True,
                                   start=self._flipped_witnesses(rows, factor[rows], opts.seed))
            self._set_radius(torch.arange(self.P), torch.full((self.P,), float(self.ball.radius), dtype=self.dt))
            found = self._closest_starts(rows, y, s)
            if found is not None:
                self._minimal_norm(*found)
            gained = t.best_dist[rows] < before * (1 - 1e-6)
            factor[rows[~gained]] = 1 - (1 - factor[rows[~gained]]) / 3

    def _flipped_witnesses(self, rows: torch.Tensor, factor: torch.Tensor, seed: int) -> torch.Tensor:
        """WITNESS_RESTARTS starts per centre (A, J, f): the closest witness's offset scaled by
        ``factor`` (A,), with a random FLIP_SHARE of its coordinates reversed."""
        gen = torch.Generator().manual_seed(seed)
        centre = self.x0[rows][:, self.free]
        delta = ((self.tracker.best_x[rows][:, self.free] - centre) * factor[:, None].to(centre))[:, None, :]
        flip = torch.rand((len(rows), WITNESS_RESTARTS, centre.shape[1]), generator=gen) < FLIP_SHARE
        return centre[:, None, :] + torch.where(flip, -delta, delta)

    def _beyond_the_ball(self, idx: torch.Tensor, restarts: int):
        """For centres without a violation in the ball: a search in a ball four times larger (within
        the domain). A violation there is no witness, but the minimal-norm bisection can walk it
        inside: the thin regions just past the exact radius are found from outside, as FMN does."""
        if idx.numel() == 0 or self.ball.norm == "l0" or self.fmask is not None:
            return None
        share = min(int(self.budget * GRADIENT_SHARE["search"] / 2), int(self._remaining()[idx].min()))
        steps = GradientOptions().steps
        if share < 2 * steps:
            return None
        big = self.radius[idx].to(torch.float64) * 4
        centre = self.x0[idx][:, self.free]
        lo = torch.maximum(centre - big[:, None].to(self.dt), self.dom_lo[self.free])
        hi = torch.minimum(centre + big[:, None].to(self.dt), self.dom_hi[self.free])
        restarts = min(max(2, share // steps), 64)
        opts = GradientOptions(steps=max(steps, share // restarts), restarts=restarts, seed=int(self.opts["seed"]) + 7,
                               max_seconds=0.5 * self._time_left())
        y, s = gradient_search(self._value_and_grad, idx, centre, big, lo, hi, self.ball.norm, opts, every=True)
        return self._closest_starts(idx, y, s)

    def _closest_starts(self, idx: torch.Tensor, y: torch.Tensor, s: torch.Tensor):
        """From the restarts' best points y (A, K, f) with values s (A, K): for the centres with a
        violation among them, (rows, distance of the closest, up to MIN_NORM_STARTS closest starts)."""
        A, K, f = y.shape
        dist = distance((self._embed(idx, y) - self.x0[idx, None, :]).reshape(A * K, -1),
                        self.ball.norm).reshape(A, K)
        hit, closest, starts = closest_starts(y, s, dist, WITNESS_SLACK, MIN_NORM_STARTS)
        if not bool(hit.any()):
            return None
        return idx[hit], closest[hit], starts[hit]

    def _bound_hint(self, idx: torch.Tensor) -> torch.Tensor | None:
        """For L-inf balls and logit margins: the box vertex where CROWN's linear lower bound of the
        worst margin is least, a start point that often lies in a region a local descent from the
        centre does not reach. None where the bound engine does not apply."""
        expr = self.prop.expression
        if self.ball.norm != "linf" or not isinstance(expr, ConfidenceGap) or not self.task.outputs_are_logits:
            return None
        try:
            from nnspec.bounds import choose_method, engine_for, margin_objectives

            # the graph as converted: max-pools concretised at their output, not decomposed into
            # ReLUs (on the demo CNN a tenth of the cost; a start point needs no tight bound)
            engine = engine_for(self.model, linear=False)
            if choose_method(engine) == "ibp":
                return None  # CROWN passes on wide layers cost more than the hint is worth
            shape = (len(idx),) + tuple(self.shape)
            lo = self.x0[idx].double().clone()
            hi = self.x0[idx].double().clone()
            lo[:, self.free] = self.box_lo[idx].double()
            hi[:, self.free] = self.box_hi[idx].double()
            m = self.model.n_outputs
            if expr.target == "least_likely":
                return None
            target = None if expr.target == "untargeted" else int(expr.target_label)
            C = torch.stack([margin_objectives(m, int(self.task.labels[p]), target) for p in idx.tolist()])
            with torch.no_grad():
                bounds = engine.intervals(lo.reshape(shape), hi.reshape(shape), "crown")
                record: dict = {}
                out = engine.graph.output
                low = engine.backward(out, C.reshape(C.shape[:2] + engine.by_name[out].shape), bounds, record=record)
            a = record["input"][torch.arange(len(idx)), low.argmin(1)].reshape(len(idx), -1)
            vertex = torch.where(a > 0, lo, hi)
            return vertex[:, self.free].to(self.dt)
        except Exception:  # a hint only: any failure leaves the random starts
            return None

    def _minimal_norm(self, idx: torch.Tensor, high: torch.Tensor, best: torch.Tensor) -> None:
        """The closest violation from known ones (the closest at distance ``high`` (A,), free
        coordinates ``best`` (A, K, f), possibly outside the ball), by FMN-style walks; every point
        inside the property's ball is recorded as a witness as it is evaluated."""
        if idx.numel() == 0:
            return
        total = min(int(self.budget * GRADIENT_SHARE["refine"]), int(self._remaining()[idx].min()))
        if total < 4:
            return
        centre = self.x0[idx][:, self.free]
        lo = self.dom_lo[self.free].expand_as(centre)
        hi = self.dom_hi[self.free].expand_as(centre)
        if self.fmask is not None:
            lo = torch.where(self.fmask[idx], lo, centre)
            hi = torch.where(self.fmask[idx], hi, centre)
        minimal_norm(self._value_and_grad, idx, centre, lo, hi, self.ball.norm, best,
                     min(total // best.shape[1], MIN_NORM_STEPS), slack=WITNESS_SLACK)

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

    # ------------------------------------------------------------------ results

    def _proved_lower(self, p: int, centre_out: torch.Tensor) -> tuple[float | None, str | None, str | None]:
        """A sound lower bound of centre p's safe radius from the bound engine, where s is linear in
        the outputs (``soundness.linear_objectives``) and the graph has rules; else (None, why, None).
        On a box region the whole box is proved first."""
        expr = self.prop.expression
        method = bound_method(self.opts)
        if method == "none" or float(self.tracker.s0[p]) < 0:
            return None, None, None
        best = float(self.tracker.best_dist[p])
        if math.isfinite(best) and not self.opts.get("bound_violated", True):
            return None, "a violation was confirmed (bound_violated=false)", None
        found: list = []
        result = proved_lower(self.model, expr, self.task.outputs_are_logits, self.task.centres[p],
                              int(self.task.labels[p]), centre_out, float(self.ball.radius), self.task.lower,
                              self.task.upper, free=self.masks[p], method=method,
                              time_limit=float(self.opts.get("bound_time", 10.0)),
                              known_upper=best if math.isfinite(best) else None, whole=bool(self.prop.boxes),
                              found=found)
        for x in found:  # candidates met by branch and bound: recorded as a witness if the model agrees
            before = float(self.tracker.best_dist[p])
            # the solver's float64 point in the model's dtype may round out of the ball by a float
            lo, hi = self._ball_box(torch.tensor([p]), torch.tensor([float(self.ball.radius)]))
            xt = torch.minimum(torch.maximum(x.reshape(1, -1).to(self.dt), lo), hi)[None][:, :, self.free]
            try:
                self.evaluate(torch.tensor([p]), xt)
            except BudgetExhausted:  # the budget is spent: say so rather than lose the point silently
                self.search_notes[p] += "; a branch-and-bound candidate was not evaluated (budget spent)"
                continue
            if float(self.tracker.best_dist[p]) < before:
                self.search_notes[p] += "; branch and bound met a violation"
            elif not math.isfinite(before):
                self.search_notes[p] += "; a branch-and-bound candidate was not a violation on the model"
        return result

    def _outcomes(self, centre_out: torch.Tensor, stops: list[str]) -> list[Outcome]:
        t = self.tracker
        seconds = (time.perf_counter() - self.started) / self.P
        traces = self._traces()
        out = []
        for p in range(self.P):
            trace = traces[p]
            if not self.is_range:  # first: branch and bound may meet a violation, which the record then shows
                lower, note, method = self._proved_lower(p, centre_out[p])
            common = dict(s_centre=float(t.s0[p]), queries=int(t.queries[p]), seconds=seconds,
                          stop=stops[p] or "none", centre_output=centre_out[p].tolist(),
                          lipschitz=float(t.q_hat[p]), min_s=float(t.min_s[p]), trace=trace)
            if self.is_range:
                out.append(Outcome(Verdict.QUANTIFIED, bounds=RadiusBounds(), witness=None,
                                   value_range=(float(t.min_s[p]), float(t.max_s[p])), **common))
                continue
            witness = None
            if math.isfinite(float(t.best_dist[p])):
                x = t.best_x[p].reshape(self.shape)
                witness = Witness(x=x.tolist(), distance=float(t.best_dist[p]), s=float(t.best_s[p]),
                                  output=[], confirmed=False)
            estimate = self._estimate(p)
            if estimate is not None and lower is not None:
                estimate = max(estimate, lower)  # below a proved bound an estimate is known to be short
            bounds = RadiusBounds(estimate=estimate, upper=_finite(float(t.best_dist[p])), lower=lower,
                                  lower_method=None if lower is None else method)
            proven = witness is None and lower is not None and lower >= float(self.ball.radius)
            verdict = Verdict.VIOLATED if witness else Verdict.PROVEN if proven else Verdict.NO_VIOLATION_FOUND
            notes = (self.search_notes[p],) + ((note,) if note else ())
            out.append(Outcome(verdict, bounds=bounds, witness=witness, notes=notes, **common))
        return out


def _radius_estimate(s0: float, q_hat: float, best_dist: float, radius: float) -> float:
    """min(d, s(x) / Q^, closest witness); 0 when the centre itself violates."""
    if s0 < 0:
        return 0.0
    est = radius if q_hat <= 0 else min(radius, s0 / q_hat)
    return min(est, best_dist)


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


def _region_lp(model: Model) -> RegionLP | None:
    """The model's chain of affine maps and ReLUs for ``RegionLP`` (cached on the model), None
    where it is not one (``nnspec.bounds.exact.chain_layers``)."""
    cached = getattr(model, "_region_lp", False)
    if cached is False:
        from nnspec.bounds import Unsupported, engine_for
        from nnspec.bounds.exact import chain_layers

        try:
            cached = RegionLP(chain_layers(engine_for(model, linear=False))[0])
        except Unsupported:
            cached = None
        model._region_lp = cached
    return cached
