"""The quantification of one task: the searches' shared state (centres, free dimensions, search
boxes, the tracker), the evaluation of points on the model, the phases in order, and each centre's
outcome with the bound engine's proof where one applies (see ``nnspec.backends.quant``)."""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from nnspec.backends.base import BoundTask
from nnspec.backends.quant.gradient_phases import GradientPhases
from nnspec.backends.quant.mads_phases import MadsPhases
from nnspec.backends.quant.tracker import (
    WITNESS_SLACK,
    Tracker,
    finite,
    radius_estimate,
    rows_of,
)
from nnspec.backends.registry import MADS
from nnspec.backends.soundness import bound_method, proved_lower, proved_range
from nnspec.errors import BudgetExhausted, SpecError
from nnspec.models.model import Model, label_score
from nnspec.properties.expressions import Centres
from nnspec.properties.regions import distance_np
from nnspec.results.records import Outcome, RadiusBounds, Verdict, Witness
from nnspec.solvers.projection import box_in_ball


class QuantBackend:
    info = MADS

    def run(self, task: BoundTask, model: Model) -> list[Outcome]:
        return _Quantification(task, model).run()


class _Quantification(GradientPhases, MadsPhases):
    """One task's quantification: every centre's search state, the evaluation that records each
    point, the phases in order (the gradient stage's in ``GradientPhases``, MADS's in
    ``MadsPhases``) and the outcomes with their proofs."""

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
            t.argmin[ix[better]] = rows_of(full, ar[better], k[better])
        best_dist = t.best_dist.numpy()
        if self.is_range:  # the highest value and where: only a range reports them
            high = np.where(inside, sn, -math.inf)
            k = high.argmax(axis=1)
            max_s = t.max_s.numpy()
            higher = high[ar, k] > max_s[ix]
            if higher.any():
                max_s[ix[higher]] = high[ar, k][higher]
                t.argmax[ix[higher]] = rows_of(full, ar[higher], k[higher])
        else:
            close = np.where(inside & (sn < -WITNESS_SLACK), dn, math.inf)
            k = close.argmin(axis=1)
            closer = close[ar, k] < best_dist[ix]
            if closer.any():
                best_dist[ix[closer]] = close[ar, k][closer]
                t.best_x[ix[closer]] = rows_of(full, ar[closer], k[closer])
                t.best_s.numpy()[ix[closer]] = sn[ar, k][closer]
        # (numpy's fancy indexing copies: the snapshot shares nothing with the tracker)
        t.snapshots.append((ix, queries[ix], min_s[ix], q_hat[ix], best_dist[ix]))

    def _estimate(self, p: int) -> float | None:
        if self.is_range:
            return None
        t = self.tracker
        return radius_estimate(float(t.s0[p]), float(t.q_hat[p]), float(t.best_dist[p]), self.ball.radius)

    def _traces(self) -> list[list[dict]]:
        """Per-centre traces from the per-evaluation snapshots (kept as arrays while searching)."""
        t, d = self.tracker, self.ball.radius
        out: list[list[dict]] = [[] for _ in range(self.P)]
        s0 = t.s0.tolist()
        for idx, queries, min_s, q_hat, best in t.snapshots:
            for p, q, m, qh, b in zip(idx.tolist(), queries.tolist(), min_s.tolist(), q_hat.tolist(), best.tolist()):
                est = None if self.is_range else radius_estimate(s0[p], qh, b, d)
                out[p].append({"queries": q, "min_s": m, "q_hat": qh, "estimate": est, "upper": finite(b)})
        return out

    # ------------------------------------------------------------------ phases

    def run(self) -> list[Outcome]:
        task = self.task
        centre_out = self.model(task.centres.to(self.model.dtype)).to(torch.float64)
        self.centre_out = centre_out
        ref_out = None
        if task.reference is not None:
            ref_out = self.model(task.reference.to(self.model.dtype)).to(torch.float64)
        self.ref_out = ref_out
        centres = Centres(task.labels, centre_out, ref_out)
        self.s_fn = self.prop.expression.bind(centres, task.outputs_are_logits)
        s0 = self.s_fn(centre_out[:, None, :])[:, 0]
        P, n = self.x0.shape
        self.tracker = Tracker(
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
























    # ------------------------------------------------------------------ results

    def _proved_lower(self, p: int, centre_out: torch.Tensor) -> tuple[float | None, str | None, str | None]:
        """A sound lower bound of centre p's safe radius from the bound engine, where s is linear in
        the outputs (``soundness.linear_objectives``) or reads them through the softmax
        (``bounds.softmax``) and the graph has rules; else (None, why, None).
        On a box region the whole box is proved first. With ``bound=auto`` and no violation found,
        branch and bound is tried on the whole ball where CROWN falls just short of it
        (``soundness.proved_lower``'s ``escalate``)."""
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
                              found=found, reference_out=None if self.ref_out is None else self.ref_out[p],
                              norm=self.ball.norm, escalate=True)
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

    def _proved_range(self, p: int) -> tuple[tuple[float, float] | None, str | None]:
        """An interval the quantity provably stays within over centre p's region (its L2 or L1
        ball, or the ball's bounding box), from the bound engine; (None, why not) where it has none."""
        method = bound_method(self.opts)
        if method == "none":
            return None, None
        return proved_range(self.model, self.prop.expression, self.task.outputs_are_logits, self.task.centres[p],
                            int(self.task.labels[p]), float(self.ball.radius), self.task.lower, self.task.upper,
                            free=self.masks[p], method=method, norm=self.ball.norm,
                            time_limit=float(self.opts.get("bound_time", 10.0)))

    def _outcomes(self, centre_out: torch.Tensor, stops: list[str]) -> list[Outcome]:
        t = self.tracker
        searched = (time.perf_counter() - self.started) / self.P  # the searches ran for all centres at once
        traces = self._traces()
        out = []
        for p in range(self.P):
            trace = traces[p]
            started = time.perf_counter()
            if not self.is_range:  # first: branch and bound may meet a violation, which the record then shows
                lower, note, method = self._proved_lower(p, centre_out[p])
            else:
                enclosure, note = self._proved_range(p)
            seconds = searched + time.perf_counter() - started  # this centre's share of the searches and its proof
            common = dict(s_centre=float(t.s0[p]), queries=int(t.queries[p]), seconds=seconds,
                          stop=stops[p] or "none", centre_output=centre_out[p].tolist(),
                          lipschitz=float(t.q_hat[p]), min_s=float(t.min_s[p]), trace=trace)
            if self.is_range:
                notes = (note,) if note else ()
                out.append(Outcome(Verdict.QUANTIFIED, bounds=RadiusBounds(), witness=None, notes=notes,
                                   value_range=(float(t.min_s[p]), float(t.max_s[p])), value_bounds=enclosure,
                                   **common))
                continue
            witness = None
            if math.isfinite(float(t.best_dist[p])):
                x = t.best_x[p].reshape(self.shape)
                witness = Witness(x=x.tolist(), distance=float(t.best_dist[p]), s=float(t.best_s[p]),
                                  output=[], confirmed=False)
            estimate = self._estimate(p)
            if estimate is not None and lower is not None:
                estimate = max(estimate, lower)  # below a proved bound an estimate is known to be short
            bounds = RadiusBounds(estimate=estimate, upper=finite(float(t.best_dist[p])), lower=lower,
                                  lower_method=None if lower is None else method)
            proven = witness is None and lower is not None and lower >= float(self.ball.radius)
            verdict = Verdict.VIOLATED if witness else Verdict.PROVEN if proven else Verdict.NO_VIOLATION_FOUND
            notes = (self.search_notes[p],) + ((note,) if note else ())
            lowest = t.argmin[p].reshape(self.shape).tolist() if witness is None else None
            out.append(Outcome(verdict, bounds=bounds, witness=witness, notes=notes, lowest_x=lowest, **common))
        return out
