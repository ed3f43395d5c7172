"""The DeepQuant backend against analytic truth.

For a linear network and a targeted confidence gap read on logits, s(y) = w . y + c with
w = W[l] - W[t]. Then the Lipschitzian metric is the dual norm of w (L-inf ball: ||w||_1; L2:
||w||_2; L1: ||w||_inf), and the exact minimal adversarial distance is s(x) / Q (inside a large
domain). The estimate must approach it, Q^ may never exceed the truth (it is a sample maximum),
and the closest witness can never be closer than the exact distance.
"""

from __future__ import annotations

import math

import pytest
import torch

from nnspec.backends.quant import QuantBackend
from tests.helpers import gap, linear_model, prop, task

DUAL = {"linf": 1, "l2": 2, "l1": math.inf}


def _truth(lin, x, label, target, norm):
    w = (lin.weight[label] - lin.weight[target]).detach()
    c = float((lin.bias[label] - lin.bias[target]).detach())
    s0 = float(w @ x) + c
    q = float(torch.linalg.vector_norm(w, ord=DUAL[norm]))
    return s0, q


def _linear_case(norm):
    """A 6-input linear model at the origin, targeted at the next label: (model, x, label, target,
    the true metric Q, the exact minimal distance)."""
    model, lin = linear_model(n=6, m=3, seed=1)
    x = torch.zeros(1, 6, dtype=torch.float64)
    label = int(model(x).argmax())
    target = (label + 1) % 3
    s0, q = _truth(lin, x[0], label, target, norm)
    return model, x, label, target, q, s0 / q


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_linear_lipschitz_metric_and_radius(norm):
    model, x, label, target, q, exact = _linear_case(norm)
    radius = 0.5 * exact  # a ball with no violation: the estimate is min(d, s0 / Q^) = d ...
    out = QuantBackend().run(task(prop(gap(target), norm, radius), x, [label]), model)[0]
    assert out.witness is None
    assert out.lipschitz <= q * (1 + 1e-9)  # a sampled maximum never exceeds the true metric
    assert out.lipschitz >= 0.98 * q
    assert out.bounds.estimate == pytest.approx(radius)


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_linear_witness_is_an_upper_bound_close_to_the_exact_distance(norm):
    model, x, label, target, q, exact = _linear_case(norm)
    out = QuantBackend().run(task(prop(gap(target), norm, 2.0 * exact), x, [label], budget=6000), model)[0]
    assert out.witness is not None
    assert out.witness.distance >= exact * (1 - 1e-6)
    assert out.witness.distance <= exact * 1.10
    assert out.bounds.estimate == pytest.approx(exact, rel=0.05)
    assert out.bounds.upper == pytest.approx(out.witness.distance)


def test_many_centres_are_searched_together_and_independently():
    model, lin = linear_model(n=5, m=4, seed=3)
    torch.manual_seed(0)
    xs = torch.rand(4, 5, dtype=torch.float64)
    labels = model(xs).argmax(1)
    exp = gap(target=None)  # untargeted: the closest other label
    outs = QuantBackend().run(task(prop(exp, "linf", 10.0), xs, labels, budget=4000), model)
    for i, out in enumerate(outs):
        l = int(labels[i])
        exacts = []
        for t in range(4):
            if t != l:
                s0, q = _truth(lin, xs[i], l, t, "linf")
                exacts.append(s0 / q)
        assert out.witness is not None
        assert out.witness.distance >= min(exacts) * (1 - 1e-6)
        assert out.witness.distance <= min(exacts) * 1.15


def test_centre_already_violating_gives_distance_zero():
    model, lin = linear_model(n=4, m=3, seed=2)
    x = torch.zeros(1, 4, dtype=torch.float64)
    wrong = int(model(x).argmin())
    out = QuantBackend().run(task(prop(gap(None), "linf", 0.1), x, [wrong]), model)[0]
    assert out.s_centre < 0
    assert out.witness is not None and out.witness.distance == 0.0
    assert out.bounds.estimate == 0.0


def test_budget_is_respected_and_counted():
    model, _ = linear_model(n=6, m=3, seed=1)
    x = torch.zeros(2, 6, dtype=torch.float64)
    labels = model(x).argmax(1)
    before = model.queries
    outs = QuantBackend().run(task(prop(gap(None), "linf", 0.01), x, labels, budget=300), model)
    assert all(o.queries <= 300 + 1 for o in outs)
    assert model.queries - before == sum(o.queries for o in outs)


def test_same_seed_same_result_different_seed_different_path():
    model, _ = linear_model(n=6, m=3, seed=1)
    x = torch.zeros(1, 6, dtype=torch.float64)
    label = model(x).argmax(1)
    runs = [QuantBackend().run(task(prop(gap(None), "l2", 5.0), x, label, budget=800, seed=s), model)[0]
            for s in (0, 0, 1)]
    assert runs[0].witness.distance == runs[1].witness.distance
    assert runs[0].lipschitz == runs[1].lipschitz
    assert runs[0].trace != runs[2].trace


def test_window_restricts_the_search():
    from nnspec.properties.regions import Window

    from torch import nn

    from nnspec.models.loading import from_module

    _, lin = linear_model(n=16, m=2, seed=4)
    model = from_module(nn.Sequential(nn.Flatten(), lin), (1, 4, 4), dtype=torch.float64)
    x = torch.full((1, 1, 4, 4), 0.5, dtype=torch.float64)
    label = model(x).argmax(1)
    p = prop(gap(None), "linf", 5.0, window=Window(0, 0, 2, 2))
    out = QuantBackend().run(task(p, x, label, budget=2000), model)[0]
    assert out.witness is not None  # a radius of 5 is far beyond the decision boundary
    delta = torch.tensor(out.witness.x) - x[0]
    assert delta[:, 2:, :].abs().max() == 0 and delta[:, :, 2:].abs().max() == 0
    assert delta[:, :2, :2].abs().max() > 0


def test_range_brackets_the_analytic_extremes():
    from nnspec.properties.expressions import OutputValue

    model, lin = linear_model(n=3, m=2, seed=5)
    x = torch.full((1, 3), 0.5, dtype=torch.float64)
    p = prop(OutputValue("logit", 0, 1e-3), "linf", 0.2, kind="range")
    out = QuantBackend().run(task(p, x, [0], lower=0.0, upper=1.0, budget=2000), model)[0]
    w, b = lin.weight[0].detach(), float(lin.bias[0].detach())
    centre = float(w @ x[0]) + b
    true_lo, true_hi = centre - 0.2 * float(w.abs().sum()), centre + 0.2 * float(w.abs().sum())
    lo, hi = out.value_range
    assert true_lo - 1e-9 <= lo <= true_lo + 1e-3
    assert true_hi - 1e-3 <= hi <= true_hi + 1e-9


@pytest.mark.parametrize("feature", [("grid", (("_0", 2), ("_1", 2)), 3), ("saliency", (("_0", 4),), 0),
                                     ("superpixels", (("_0", 4),), 0)])
def test_feature_restricts_the_search_per_input(feature):
    from torch import nn

    from nnspec.models.loading import from_module
    from nnspec.properties.regions import Ball
    from nnspec.results.confirm import confirm

    _, lin = linear_model(n=16, m=2, seed=4)
    model = from_module(nn.Sequential(nn.Flatten(), lin), (1, 4, 4), dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 4, 4, generator=gen, dtype=torch.float64)
    labels = model(x).argmax(1)
    p = prop(gap(None), "linf", 5.0)
    p = type(p)(**{**{f: getattr(p, f) for f in p.__dataclass_fields__}, "region": Ball("linf", 5.0, None, feature)})
    outs = QuantBackend().run(task(p, x, labels, budget=2000), model)
    from nnspec.models.model import label_score

    for i, out in enumerate(outs):
        allowed = p.region.allowed((1, 4, 4), x[i], label_score(model, (1, 4, 4), int(labels[i]))).reshape(1, 4, 4)
        assert 0 < allowed.sum() < 16
        if out.witness is not None:
            delta = torch.tensor(out.witness.x, dtype=torch.float64) - x[i]
            assert float((delta * (1 - allowed)).abs().max()) == 0.0
            kept = confirm(out, model=model, ball=p.region, expression=p.expression, centre=x[i], label=int(labels[i]),
                           lower=torch.full((16,), -10.0), upper=torch.full((16,), 10.0), outputs_are_logits=True)
            assert kept.witness is not None and kept.witness.confirmed


def test_confirmation_drops_a_witness_outside_its_feature():
    from torch import nn

    from nnspec.models.loading import from_module
    from nnspec.properties.regions import Ball
    from nnspec.results.confirm import confirm
    from nnspec.results.records import Outcome, RadiusBounds, Verdict, Witness

    _, lin = linear_model(n=16, m=2, seed=4)
    model = from_module(nn.Sequential(nn.Flatten(), lin), (1, 4, 4), dtype=torch.float64)
    x = torch.full((1, 4, 4), 0.5, dtype=torch.float64)
    label = int(model(x[None]).argmax())
    bad = torch.full((1, 4, 4), 0.5, dtype=torch.float64)
    bad[0, 0, 0] += 3.0  # top-left pixel: in feature 0 of a 2x2 grid, not in feature 3
    out = Outcome(Verdict.VIOLATED, 1.0, RadiusBounds(upper=3.0), Witness(bad.tolist(), 3.0, -1.0, [], False),
                  10, 0.1, "budget", [0.0, 0.0])
    ball = Ball("linf", 5.0, None, ("grid", (("_0", 2), ("_1", 2)), 3))
    kept = confirm(out, model=model, ball=ball, expression=gap(None), centre=x, label=label,
                   lower=torch.full((16,), -10.0), upper=torch.full((16,), 10.0), outputs_are_logits=True)
    assert kept.witness is None and kept.dropped_witnesses == 1
    assert "outside the window or feature" in kept.notes[-1]
