"""Witness confirmation: no witness is reported unless a fresh evaluation on the model agrees.

A witness is confirmed when, evaluated again on its own (and on onnxruntime with
``--cross-check``), it lies in the domain and in the ball (window included) and its s is < 0.
One that fails is dropped, and the drop is recorded in the outcome.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from nnspec.models.model import Model, label_score
from nnspec.properties.expressions import Centres
from nnspec.properties.regions import Ball, distance
from nnspec.results.records import Outcome, RadiusBounds, Verdict, Witness

TOLERANCE = 1e-6


def confirm(outcome: Outcome, *, model: Model, ball: Ball, expression, centre: torch.Tensor, label: int,
            lower: torch.Tensor, upper: torch.Tensor, outputs_are_logits: bool,
            reference: torch.Tensor | None = None,
            cross_check: Callable[[torch.Tensor], torch.Tensor] | None = None,
            tolerance: float | None = None) -> Outcome:
    """The witness and the milestones (violations found along the way), each re-evaluated on its
    own. Unconfirmed ones are dropped; if the witness fails and a milestone holds, the closest
    milestone that holds becomes the witness. ``tolerance``: how far outside the domain a witness
    may lie (default ``TOLERANCE``; 0 for box regions, compared in the model's dtype)."""
    tol = TOLERANCE if tolerance is None else tolerance
    w = outcome.witness
    if w is None:
        return outcome
    centre_out = model(centre[None].to(model.dtype))[0].to(torch.float64)
    ref_out = model(reference[None].to(model.dtype))[0].to(torch.float64) if reference is not None else None
    ctx = Centres(torch.tensor([label]), centre_out[None], None if ref_out is None else ref_out[None])
    s_fn = expression.bind(ctx, outputs_are_logits)

    def check(cand: Witness) -> tuple[Witness | None, list[str]]:
        x = torch.tensor(cand.x, dtype=model.dtype)
        problems = _check_region(x, centre.to(model.dtype), ball, lower, upper, model, label, tol)
        out = model(x[None])[0].to(torch.float64)
        s = float(s_fn(out[None, None, :])[0, 0])
        if s >= 0:
            problems.append(f"s = {s:.3g} >= 0 on re-evaluation")
        if cross_check is not None:
            other = cross_check(x[None]).to(torch.float64)
            s_other = float(s_fn(other[None])[0, 0])
            if s_other >= 0:
                problems.append(f"s = {s_other:.3g} >= 0 on onnxruntime")
        if problems:
            return None, problems
        dist = float(distance((x.to(torch.float64) - centre.to(torch.float64))[None], ball.norm)[0])
        return Witness(x=cand.x, distance=dist, s=s, output=out.tolist(), confirmed=True, found_at=cand.found_at), []

    witness, problems = check(w)
    milestones = [m for m in (check(m)[0] for m in outcome.milestones) if m is not None]
    notes, dropped = outcome.notes, outcome.dropped_witnesses
    if len(milestones) < len(outcome.milestones):
        notes += (f"{len(outcome.milestones) - len(milestones)} milestone(s) dropped: not confirmed",)
    if witness is None:
        notes += (f"witness dropped: {'; '.join(problems)}",)
        dropped += 1
        if milestones:  # the closest violation that holds takes its place
            witness = min(milestones, key=lambda m: m.distance)
            milestones = [m for m in milestones if m is not witness]
            notes += ("the closest confirmed milestone is the witness",)
    if witness is None:
        bounds = dataclasses.replace(outcome.bounds, upper=None)
        verdict = Verdict.NO_VIOLATION_FOUND if outcome.verdict == Verdict.VIOLATED else outcome.verdict
        return dataclasses.replace(outcome, witness=None, bounds=bounds, verdict=verdict, notes=notes,
                                   dropped_witnesses=dropped, milestones=())
    estimate = outcome.bounds.estimate
    bounds = RadiusBounds(estimate=None if estimate is None else min(estimate, witness.distance),
                          upper=witness.distance, lower=outcome.bounds.lower, lower_method=outcome.bounds.lower_method)
    return dataclasses.replace(outcome, witness=witness, bounds=bounds, verdict=Verdict.VIOLATED,
                               notes=notes, dropped_witnesses=dropped, milestones=tuple(milestones))


def _check_region(x, centre, ball: Ball, lower, upper, model: Model, label: int,
                  tolerance: float = TOLERANCE) -> list[str]:
    problems = []
    flat = x.reshape(-1).to(torch.float64)
    # the bounds as the model reads them (its dtype), so that a point on a bound is inside
    lo = lower.to(x.dtype).to(torch.float64).expand_as(flat)
    hi = upper.to(x.dtype).to(torch.float64).expand_as(flat)
    if bool((flat < lo - tolerance).any() or (flat > hi + tolerance).any()):
        problems.append("outside the domain" if tolerance else "outside the box")
    delta = (x - centre).to(torch.float64)
    dist = float(distance(delta[None], ball.norm)[0])
    if dist > ball.radius * (1 + TOLERANCE) + TOLERANCE:
        problems.append(f"distance {dist:.6g} > radius {ball.radius:g}")
    allowed = ball.allowed(tuple(x.shape), centre, label_score(model, tuple(x.shape), label))
    if allowed is not None:  # recomputed here, independently of the search
        outside = delta.reshape(-1) * (1 - allowed)
        if bool((outside.abs() > TOLERANCE).any()):
            problems.append("changes outside the window or feature")
    return problems
