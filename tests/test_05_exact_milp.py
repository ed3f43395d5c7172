"""Against exact truth: the MILP's minimal adversarial distance of small ReLU nets.

The search's witness distance is an upper bound, so it can never undercut the exact distance, and
with a modest budget it should come close; in a ball smaller than the exact distance nothing may
be found at all (a witness there would be a false one)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nnspec.backends.quant import QuantBackend
from nnspec.models.loading import from_module
from nnspec.solvers.milp import layers_of, min_distance
from tests.helpers import gap, linear_model, prop, relu_net, task


def test_milp_on_a_linear_model_equals_the_closed_form():
    model, lin = linear_model(n=5, m=3, seed=7)
    x0 = np.full(5, 0.1)
    label = int(model(torch.tensor(x0)[None]).argmax())
    t = (label + 1) % 3
    w = (lin.weight[label] - lin.weight[t]).detach().numpy()
    s0 = float(w @ x0 + (lin.bias[label] - lin.bias[t]).detach())
    for norm, dual in (("linf", 1), ("l1", np.inf)):
        r = min_distance(layers_of(lin), x0, label, t, norm, lo=-10, hi=10, max_radius=10)
        assert r.distance == pytest.approx(s0 / np.linalg.norm(w, dual), rel=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("norm", ["linf", "l1"])
def test_witness_distance_brackets_the_exact_minimal_distance(seed, norm):
    net = relu_net((4, 10, 10, 3), seed=seed)
    model = from_module(net, (4,), dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(3, 4, generator=gen, dtype=torch.float64)
    labels = model(x).argmax(1)
    outs = QuantBackend().run(task(prop(gap(None), norm, 1.0), x, labels, lower=0.0, upper=1.0, budget=4000), model)
    for i, out in enumerate(outs):
        exact = min_distance(layers_of(net), x[i].numpy(), int(labels[i]), None, norm, max_radius=1.0).distance
        if np.isinf(exact):
            assert out.witness is None  # nothing exists: nothing may be reported
            continue
        assert out.witness is not None, f"input {i}: exact distance {exact:.4f} but no witness"
        assert out.witness.distance >= exact - 1e-6
        assert out.witness.distance <= 1.25 * exact + 1e-3


def test_nothing_is_found_inside_the_exact_safe_radius():
    net = relu_net((4, 10, 10, 3), seed=5)
    model = from_module(net, (4,), dtype=torch.float64)
    x = torch.full((1, 4), 0.5, dtype=torch.float64)
    label = int(model(x).argmax())
    exact = min_distance(layers_of(net), x[0].numpy(), label, None, "linf", max_radius=1.0).distance
    assert np.isfinite(exact)
    out = QuantBackend().run(task(prop(gap(None), "linf", 0.95 * exact), x, [label], lower=0.0, upper=1.0,
                                  budget=3000), model)[0]
    assert out.witness is None
    assert out.bounds.estimate <= 0.95 * exact + 1e-12


def test_max_pools_after_a_relu_are_exact_relu_layers_for_the_milp():
    """A max-pool after a ReLU becomes ReLU layers (max(a, b) = relu(b) + relu(a - b) for b >= 0):
    the composed chain equals the network at random points (overlapping 3-wide windows, stride
    1, padding), and the MILP's radius of a 2-input net with a max-pool equals the one found by a
    2001 x 2001 grid (to its spacing)."""
    from torch import nn

    from nnspec.bounds import BoundEngine, BoundGraph
    from nnspec.bounds.exact import chain_layers, milp_radius

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, stride=1, padding=1),
                        nn.Conv2d(3, 2, 2, stride=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2, 3)).double()
    engine = BoundEngine(BoundGraph.from_module(net, (1, 4, 4)))
    layers, preacts = chain_layers(engine)
    assert None in preacts and len(layers) == len(preacts) + 1
    x = torch.rand(200, 16, dtype=torch.float64) * 4 - 2
    y = x.numpy()
    for w, b in layers[:-1]:
        y = np.maximum(y @ w.T + b, 0)
    with torch.no_grad():
        assert np.abs(y @ layers[-1][0].T + layers[-1][1] - net(x.reshape(-1, 1, 4, 4)).numpy()).max() < 1e-10

    torch.manual_seed(3)
    small = nn.Sequential(nn.Linear(2, 6), nn.ReLU(), nn.Unflatten(1, (3, 2)), nn.MaxPool1d(2), nn.Flatten(),
                          nn.Linear(3, 2)).double()
    engine = BoundEngine(BoundGraph.from_module(small, (2,)))
    x0 = torch.tensor([0.1, -0.2], dtype=torch.float64)
    with torch.no_grad():
        label = int(small(x0[None]).argmax())
        grid = torch.cartesian_prod(*[torch.linspace(-2, 2, 2001, dtype=torch.float64)] * 2)
        out = small(grid)
    wrong = out.argmax(1) != label
    assert bool(wrong.any())
    exact_grid = float((grid[wrong] - x0).abs().max(1).values.min())
    r = milp_radius(engine, x0, label, None, 2.0, torch.full((2,), -2.0), torch.full((2,), 2.0), time_limit=30)
    assert r.status == "optimal"
    assert r.distance <= exact_grid + 1e-9 and r.distance >= exact_grid - 0.002 - 1e-9


@pytest.mark.parametrize("seed", [0, 2, 4])
def test_milp_radius_skips_the_labels_crown_proves_and_keeps_the_exact_answer(seed, monkeypatch):
    """``milp_radius`` solves no MILP for a label whose margin CROWN proves on the box; the answer
    is the one over every label: the exact distance when it lies inside the radius, and a proof
    that nothing does (``infeasible``, lower bound = the radius) when the radius is below it."""
    import nnspec.solvers.milp as milp_module
    from nnspec.bounds import BoundEngine, BoundGraph
    from nnspec.bounds.exact import milp_radius

    net = relu_net((6, 16, 16, 8), seed=seed)
    engine = BoundEngine(BoundGraph.from_module(net, (6,)))
    x = torch.full((6,), 0.5, dtype=torch.float64)
    label = int(net(x[None]).argmax())
    exact = min_distance(layers_of(net), x.numpy(), label, None, "linf", max_radius=1.0)
    assert exact.status == "optimal"
    seen = []
    original = milp_module.min_distance

    def spy(*args, **kwargs):
        seen.append(kwargs.get("targets"))
        return original(*args, **kwargs)

    monkeypatch.setattr(milp_module, "min_distance", spy)
    above = milp_radius(engine, x, label, None, 1.2 * exact.distance, torch.zeros(6), torch.ones(6))
    assert above.status == "optimal" and above.distance == pytest.approx(exact.distance, rel=1e-6)
    assert len(seen[0]) < 7  # CROWN proved some labels on the box: no MILP for them
    below = milp_radius(engine, x, label, None, 0.999 * exact.distance, torch.zeros(6), torch.ones(6))
    assert below.status == "infeasible" and below.lower == pytest.approx(0.999 * exact.distance)
