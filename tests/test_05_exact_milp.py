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
