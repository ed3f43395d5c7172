"""The white-box stage, first where s has a usable gradient: a batched projected-gradient search
over the ball (several restarts per centre, a vertex walk first on L-inf boxes), minimal-norm walks
from the violations found (also from a ball four times larger), searches in balls just inside the
closest violation, and the closest violation of the witness's activation region by linear
programming on ReLU chains. Every point is evaluated on the model and recorded like MADS's.

A part of ``_Quantification`` (``nnspec.backends.quant.quantification``): its methods read the
centres, the search boxes and the tracker, and evaluate through ``evaluate``."""

from __future__ import annotations

import time
from functools import partial

import numpy as np
import torch

from nnspec.backends.quant.tracker import WITNESS_SLACK
from nnspec.errors import ModelError
from nnspec.models.model import Model
from nnspec.properties.expressions import ConfidenceGap
from nnspec.properties.regions import distance
from nnspec.solvers.gradient import (
    GradientOptions,
    closest_starts,
    minimal_norm,
    vertex_walk,
)
from nnspec.solvers.gradient import search as gradient_search
from nnspec.solvers.region_lp import ITERATIONS, RegionLP

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


class GradientPhases:
    """The gradient-guided stage of ``_Quantification`` (see the module's docstring)."""

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
