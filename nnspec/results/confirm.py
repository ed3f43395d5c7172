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
            cross_check: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Outcome:
    w = outcome.witness
    if w is None:
        return outcome
    x = torch.tensor(w.x, dtype=model.dtype)
    problems = _check_region(x, centre.to(model.dtype), ball, lower, upper, model, label)
    out = model(x[None])[0].to(torch.float64)
    centre_out = model(centre[None].to(model.dtype))[0].to(torch.float64)
    ref_out = model(reference[None].to(model.dtype))[0].to(torch.float64) if reference is not None else None
    ctx = Centres(torch.tensor([label]), centre_out[None], None if ref_out is None else ref_out[None])
    s_fn = expression.bind(ctx, outputs_are_logits)
    s = float(s_fn(out[None, None, :])[0, 0])
    if s >= 0:
        problems.append(f"s = {s:.3g} >= 0 on re-evaluation")
    if cross_check is not None:
        other = cross_check(x[None]).to(torch.float64)
        s_other = float(s_fn(other[None])[0, 0])
        if s_other >= 0:
            problems.append(f"s = {s_other:.3g} >= 0 on onnxruntime")
    if problems:
        notes = outcome.notes + (f"witness dropped: {'; '.join(problems)}",)
        bounds = dataclasses.replace(outcome.bounds, upper=None)
        verdict = Verdict.NO_VIOLATION_FOUND if outcome.verdict == Verdict.VIOLATED else outcome.verdict
        return dataclasses.replace(outcome, witness=None, bounds=bounds, verdict=verdict, notes=notes,
                                   dropped_witnesses=outcome.dropped_witnesses + 1)
    dist = float(distance((x.to(torch.float64) - centre.to(torch.float64))[None], ball.norm)[0])
    witness = Witness(x=w.x, distance=dist, s=s, output=out.tolist(), confirmed=True)
    estimate = outcome.bounds.estimate
    bounds = RadiusBounds(estimate=None if estimate is None else min(estimate, dist), upper=dist,
                          lower=outcome.bounds.lower, lower_method=outcome.bounds.lower_method)
    return dataclasses.replace(outcome, witness=witness, bounds=bounds, verdict=Verdict.VIOLATED)


def _check_region(x, centre, ball: Ball, lower, upper, model: Model, label: int) -> list[str]:
    problems = []
    flat = x.reshape(-1).to(torch.float64)
    lo, hi = lower.to(torch.float64).expand_as(flat), upper.to(torch.float64).expand_as(flat)
    if bool((flat < lo - TOLERANCE).any() or (flat > hi + TOLERANCE).any()):
        problems.append("outside the domain")
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
