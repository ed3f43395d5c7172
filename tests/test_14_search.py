"""Finding the violations a model has: the gradient-guided stage against exact radii, every norm,
other property kinds, and the black-box path where gradients are useless."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import nnspec
from tests.helpers import linear_model, relu_case


def test_a_violation_just_outside_the_exact_radius_is_found_on_every_digit():
    """The demo MLP, a fixed set of test digits, exact L-inf radii r* from nnspec's MILP mode: a
    ball of 1.01 r* holds a violation, and the default search finds it on every one."""
    import numpy as np

    from nnspec.bounds import engine_for
    from nnspec.bounds.exact import milp_radius
    from nnspec.models.loading import load_model
    from tests.conftest import ROOT

    model = load_model(ROOT / "specs" / "models" / "digits_mlp.onnx")
    data = np.load(ROOT / "specs" / "models" / "digits_test.npz")
    x, y = torch.from_numpy(data["x"][:4]), torch.from_numpy(data["y"][:4]).long()
    engine = engine_for(model)
    for i in range(len(x)):
        first = nnspec.check_module(model, x[i:i + 1], "robustness on logits within linf(0.5) using mads(bound=none)",
                                    labels=y[i:i + 1])[0]
        exact = milp_radius(engine, x[i].double(), int(y[i]), None, first.bounds["upper"] * (1 + 1e-6),
                            torch.zeros(64), torch.ones(64)).distance
        r = nnspec.check_module(model, x[i:i + 1], f"robustness on logits within linf({1.01 * exact!r}) "
                                "using mads(bound=none)", labels=y[i:i + 1])[0]
        assert r.verdict == "violated" and r.witness["confirmed"], (i, exact)
        assert exact * (1 - 1e-6) <= r.bounds["upper"] <= 1.01 * exact


def test_the_quantified_witness_comes_within_a_percent_of_the_exact_radius_past_a_farther_region():
    """A demo digit whose closest violation (label 2, the third most likely at the centre) lies 5%
    inside the region an untargeted walk ends in (label 4, the runner-up): the shrinking-ball
    rounds aim their restarts at the most likely other labels, so the quantification's closest
    witness is within 1% of the MILP's r* (never below it) whatever the seed (untargeted rounds
    found it with seeds 0 and 3 of 0-3)."""
    import numpy as np

    from nnspec.bounds import engine_for
    from nnspec.bounds.exact import milp_radius
    from nnspec.models.loading import load_model
    from tests.conftest import ROOT

    model = load_model(ROOT / "specs" / "models" / "digits_mlp.onnx")
    data = np.load(ROOT / "specs" / "models" / "digits_test.npz")
    xs, ys = torch.from_numpy(data["x"]), torch.from_numpy(data["y"]).long()
    i = int((model(xs).argmax(1) == ys).nonzero().flatten()[18])  # the 19th correctly classified digit
    uppers = []
    for seed in range(4):
        r = nnspec.check_module(model, xs[i:i + 1], f"robustness on logits within linf(0.5) using mads(bound=none, "
                                f"seed={seed})", labels=ys[i:i + 1])[0]
        assert r.verdict == "violated" and r.witness["confirmed"]
        uppers.append(r.bounds["upper"])
    exact = milp_radius(engine_for(model), xs[i].double(), int(ys[i]), None, max(uppers) * (1 + 1e-6),
                        torch.zeros(64), torch.ones(64)).distance
    for seed, upper in enumerate(uppers):
        assert exact * (1 - 1e-6) <= upper <= 1.01 * exact, (seed, upper, exact)


@pytest.mark.parametrize("norm, dual", [("linf", 1), ("l2", 2), ("l1", float("inf"))])
def test_the_closest_witness_of_a_linear_model_is_within_a_percent_of_the_analytic_radius(norm, dual):
    model, lin = linear_model(n=20, m=3, seed=1)
    x = torch.full((1, 20), 0.5, dtype=torch.float64)
    label = int(model(x).argmax())
    w, b = lin.weight.detach(), lin.bias.detach()
    gaps = [(float((w[label] - w[t]) @ x[0] + b[label] - b[t]) / float(torch.linalg.vector_norm(w[label] - w[t], dual)))
            for t in range(3) if t != label]
    exact = min(gaps)
    r = nnspec.check_module(model, x, f"robustness on logits within {norm}({3 * exact!r}) using mads(budget=3000, "
                            "bound=none)", domain=(-10.0, 10.0))[0]
    assert r.verdict == "violated" and exact * (1 - 1e-9) <= r.bounds["upper"] <= 1.01 * exact


def test_reachability_is_searched_by_gradients_too():
    """logit(k) < T on a linear model: the maximum over the L-inf ball is w.x0 + b + r ||w||_1."""
    model, lin = linear_model(n=10, m=3, seed=2)
    x = torch.full((1, 10), 0.5, dtype=torch.float64)
    w, b = lin.weight.detach()[1], float(lin.bias.detach()[1])
    top = float(w @ x[0]) + b + 0.1 * float(w.abs().sum())
    r = nnspec.check_module(model, x, f"reachability logit(1) < {top - 1e-3!r} within linf(0.1) using "
                            "mads(budget=600, bound=none)", domain=(-10.0, 10.0))[0]
    assert r.verdict == "violated"
    r = nnspec.check_module(model, x, f"reachability logit(1) < {top + 1e-3!r} within linf(0.1) using "
                            "mads(budget=600, bound=none)", domain=(-10.0, 10.0))[0]
    assert r.verdict != "violated"


class _Sign(nn.Module):
    def forward(self, x):
        return torch.sign(x)


def test_sign_activation_networks_are_searched_black_box():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(4, 16), _Sign(), nn.Linear(16, 3)).double()
    x = torch.rand(3, 4, dtype=torch.float64)
    records = nnspec.check_module(net, x, "robustness on logits within linf(0.5) using mads(budget=1500, bound=none)",
                                  domain=(0.0, 1.0))
    assert all(r.notes[0].startswith("search: MADS only (the gradient of s is zero") for r in records)
    assert sum(r.verdict == "violated" for r in records) >= 2
    for r in records:
        if r.witness:
            assert r.witness["confirmed"]


def test_attack_mads_keeps_the_papers_search_alone():
    net, x = relu_case(2, 1, (6, 16, 16, 4))
    r = nnspec.check_module(net, x, "robustness on logits within linf(0.3) using mads(budget=500, attack=mads, "
                            "bound=none)", domain=(0.0, 1.0))[0]
    assert r.notes[0] == "search: MADS (derivative-free; attack=mads)"


def test_the_game_backend_can_start_its_upper_bound_with_gradients():
    from nnspec.solvers.milp import layers_of, min_distance

    net, x = relu_case(4, 2, (6, 16, 16, 4))
    spec = "maximum safe radius within linf(0.5) using game(budget=3000, attack={}, lower=none, bound=none)"
    for i in range(2):
        label = int(net(x[i:i + 1]).argmax())
        exact = min_distance(layers_of(net), x[i].numpy(), label, None, "linf", max_radius=0.5).distance
        grad = nnspec.check_module(net, x[i:i + 1], spec.format("gradient"), domain=(0.0, 1.0))[0]
        grid = nnspec.check_module(net, x[i:i + 1], spec.format("none"), domain=(0.0, 1.0))[0]
        if exact > 0.5:
            continue
        assert grad.witness["confirmed"] and exact - 1e-9 <= grad.bounds["upper"] <= 1.02 * exact
        assert grad.bounds["upper"] <= (grid.bounds["upper"] or 1.0) + 1e-9
        assert any(n.startswith("gradient stage: a violation") for n in grad.notes)


def test_small_budgets_end_the_search_instead_of_failing_the_task():
    """The task's query budget is a hard cap; a stage asking a batch beyond it ends the search
    (the records keep what was found) rather than turning into an internal error."""
    from pathlib import Path

    from nnspec.pipeline import CheckOptions, check

    spec = Path(__file__).resolve().parent.parent / "specs" / "digits_mlp.nnspec"
    for budget in (50, 100):
        result = check([str(spec)], CheckOptions(budget=budget, cache=False))
        assert not [r for r in result.records if r.verdict == "error"], budget
        assert all(r.queries <= budget + 4 for r in result.records if r.backend == "mads")


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_restarts_stuck_on_a_plateau_start_afresh(norm):
    """Where every ReLU of a layer is off, the gradient is zero and no step moves a restart (ACAS
    Xu's 1_9 prop_7: 20,000 descents from uniform starts all stalled at +5e-4 on such a plateau).
    Stuck restarts are redrawn (L-inf: points of random faces; L2: the ball's surface), so a
    violation in a thin shell of the ball is found. Here s = 1 - 20 relu(x0 - 0.9) in 4-D: zero
    gradient wherever x0 <= 0.9, violated only where x0 > 0.95, which neither the centre nor the
    first restarts (L2: half the radius; L-inf: x0 = 1 only at half the vertices) are sure to reach."""
    from nnspec.solvers.gradient import GradientOptions, search

    def value_and_grad(idx, y):
        y = y.detach().requires_grad_(True)
        s = 1 - 20 * torch.relu(y[..., 0] - 0.9)
        (g,) = torch.autograd.grad(s.sum(), y)
        return s.detach(), g

    f = 4
    centre = torch.full((1, f), 0.5, dtype=torch.float64)
    if norm == "l2":
        centre[0, 0] = 0.45  # the shell x0 > 0.95 lies on the ball's surface (radius 0.55) only
    radius = torch.tensor([0.5 if norm == "linf" else 0.55], dtype=torch.float64)
    lo, hi = torch.zeros((1, f), dtype=torch.float64), torch.ones((1, f), dtype=torch.float64)
    for seed in range(8):
        opts = GradientOptions(steps=300, restarts=2, seed=seed)
        start = centre.clone()
        if norm == "linf":
            start[0, 0] = 0.2  # the first restart on the plateau, far from the violation
        y, s = search(value_and_grad, torch.arange(1), centre, radius, lo, hi, norm, opts, start=start)
        assert float(s[0]) < 0 and float(y[0, 0]) > 0.95, (norm, seed)


def test_a_gap_toward_a_label_bounds_the_untargeted_gap_from_above():
    """s_j = f_l - f_j - margin >= s = f_l - max_{j != l} f_j - margin, with equality at the best
    other label: a violation of any s_j is a violation of s (what the targeted restarts rely on)."""
    from nnspec.properties.expressions import Centres, ConfidenceGap

    gen = torch.Generator().manual_seed(0)
    out = torch.randn(3, 5, 6, generator=gen, dtype=torch.float64)
    labels = torch.tensor([0, 3, 5])
    for reading in ("logits", "probabilities"):
        gap = ConfidenceGap("untargeted", None, 0.1, reading)
        s = gap.bind(Centres(labels, out[:, 0]), True)(out)
        for j in range(6):
            targets = torch.full((3, 5), j)
            sj = gap.toward(labels, True)(out, targets)
            keep = labels != j
            assert bool((sj[keep] >= s[keep] - 1e-12).all())
        values = out if reading == "logits" else torch.softmax(out, -1)
        best = values.scatter(2, labels.view(-1, 1, 1).expand(-1, 5, 1), -float("inf")).argmax(2)
        assert torch.allclose(gap.toward(labels, True)(out, best), s)
