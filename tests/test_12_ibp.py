"""Interval bound propagation: exact where it must be, never above the exact radius, positioned
refusals where it does not apply."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from nnspec.solvers.ibp import certified_radius, margin_lower_bounds
from tests.helpers import relu_case, relu_net


def _margin(net, x, label):
    with torch.no_grad():
        y = net(x)
    others = y.clone()
    others[:, label] = -math.inf
    return y[:, label] - others.max(1).values


def test_a_point_box_gives_the_true_margin():
    net = relu_net((5, 12, 12, 4), seed=3)
    x = torch.rand(6, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for label in range(4):
        assert torch.allclose(margin_lower_bounds(net, x, x, label), _margin(net, x, label), atol=1e-12)


def test_on_a_linear_model_the_certified_radius_is_the_analytic_one():
    """One Linear layer: the margin's interval is exact, so the L-inf radius is s(x0) / ||w_l - w_t||_1."""
    net = nn.Sequential(nn.Linear(4, 2)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -2.0, 0.5, 0.0], [0.0, 1.0, -0.5, 1.0]]))
        net[0].bias.zero_()
    x0 = torch.tensor([0.9, 0.1, 0.6, 0.2], dtype=torch.float64)  # margin 1.0, ||w0 - w1||_1 = 6
    r = certified_radius(net, (4,), x0, 0, 1.0, torch.full((4,), -10.0), torch.full((4,), 10.0))
    assert r == pytest.approx(1 / 6, rel=2e-3) and r <= 1 / 6
    # a domain that clips the box: dimension 0 can fall by 0.05 only, so 1 - 0.05 - 5 r > 0 up to r = 0.19
    lower = torch.tensor([0.85, 0.0, 0.0, 0.0], dtype=torch.float64)
    clipped = certified_radius(net, (4,), x0, 0, 1.0, lower, torch.ones(4))
    assert clipped == pytest.approx(0.19, rel=2e-3) and clipped <= 0.19


@pytest.mark.parametrize("seed", [4, 5, 7, 9])
def test_the_certified_radius_never_exceeds_the_exact_milp_radius(seed):
    from nnspec.solvers.milp import layers_of, min_distance

    net, x = relu_case(seed, 2)
    for i in range(2):
        label = int(net(x[i:i + 1]).argmax())
        exact = min_distance(layers_of(net), x[i].numpy(), label, None, "linf", max_radius=1.0).distance
        r = certified_radius(net, (4,), x[i], label, 1.0, torch.zeros(4), torch.ones(4))
        assert 0 < r <= exact + 1e-9


def test_conv_and_maxpool_boxes_hold_every_sampled_input():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(3 * 3 * 3, 4)).double()
    x0 = torch.rand(1, 1, 8, 8, dtype=torch.float64)
    label = int(net(x0).argmax())
    r = 0.05
    with torch.no_grad():
        bound = margin_lower_bounds(net, x0 - r, x0 + r, label)
    samples = x0 + r * (2 * torch.rand(2000, 1, 8, 8, dtype=torch.float64) - 1)
    assert float(_margin(net, samples, label).min()) >= float(bound) - 1e-12


def test_a_window_keeps_the_other_dimensions_fixed():
    net = relu_net((4, 10, 10, 3), seed=4)
    x0 = torch.rand(4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    label = int(net(x0[None]).argmax())
    full = certified_radius(net, (4,), x0, label, 1.0, torch.zeros(4), torch.ones(4))
    one = certified_radius(net, (4,), x0, label, 1.0, torch.zeros(4), torch.ones(4), free=torch.tensor([1, 0, 0, 0]))
    assert one >= full


def test_operators_without_an_interval_rule_are_refused():
    net = nn.Sequential(nn.Linear(3, 3), nn.Softmax(dim=1), nn.Linear(3, 2)).double()
    with pytest.raises(ValueError, match="no interval rule for layer Softmax"):
        certified_radius(net, (3,), torch.zeros(3), 0, 1.0, torch.zeros(3), torch.ones(3))


def test_the_game_backend_reports_ibp_and_proves_where_the_box_is_certified():
    import nnspec

    net, x = relu_case(6, 2)
    records = nnspec.check_module(net, x, "maximum safe radius within linf(0.01) using game(budget=500)",
                                  domain=(0.0, 1.0))
    for r in records:  # a small ball that IBP certifies whole: a proof, not only a search
        assert r.bounds["lower"] == pytest.approx(0.01) and r.verdict == "proven"
        assert any(n.startswith("interval bound propagation certifies") for n in r.notes)
    net = relu_net((4, 10, 10, 3), seed=4)  # exact L-inf radii 0.37 and 0.23 (MILP)
    x = torch.rand(2, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    records = nnspec.check_module(net, x, "maximum safe radius within linf(0.5) using game(budget=500, lower=none)",
                                  domain=(0.0, 1.0))
    for r in records:  # a ball too large to certify: IBP's radius is the lower bound, no proof
        assert 0 < r.bounds["lower"] < 0.5 and r.bounds["lower_method"] == "interval bound propagation"
        assert r.verdict != "proven"


def test_no_sound_bound_is_claimed_when_the_outputs_are_not_logits():
    """The layers' Lipschitz constant and IBP both bound the logit margin; a model declared to give
    probabilities gets neither (the game still searches for violations)."""
    import nnspec

    net = nn.Sequential(relu_net((4, 10, 3), seed=4), nn.Softmax(dim=1))
    x = torch.rand(1, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    r = nnspec.check_module(net, x, "maximum safe radius within linf(0.5) using game(budget=800, tau=0.05)",
                            outputs_are_logits=False, domain=(0.0, 1.0))[0]
    assert r.bounds["lower"] is None and r.bounds["lower_method"] is None
    assert any("not logits" in n for n in r.notes) and any("no interval bound" in n for n in r.notes)


@pytest.mark.parametrize("seed", [4, 5, 7])
def test_the_mads_backend_proves_small_balls_and_its_lower_bound_never_exceeds_the_exact_radius(seed):
    import nnspec
    from nnspec.solvers.milp import layers_of, min_distance

    net, x = relu_case(seed, 2)
    small = nnspec.check_module(net, x, "robustness on logits within linf(0.001) using mads(budget=300)",
                                domain=(0.0, 1.0))
    assert all(r.verdict == "proven" and r.bounds["lower"] == pytest.approx(0.001) for r in small)
    large = nnspec.check_module(net, x, "robustness on logits within linf(1) using mads(budget=2000)",
                                domain=(0.0, 1.0))
    for i, r in enumerate(large):
        exact = min_distance(layers_of(net), x[i].numpy(), r.label, None, "linf", max_radius=1.0).distance
        assert 0 < r.bounds["lower"] <= exact + 1e-9
        assert r.bounds["lower_method"] == "interval bound propagation"
        assert r.verdict == "violated" and r.bounds["lower"] <= r.bounds["upper"]
        assert r.bounds["estimate"] >= r.bounds["lower"]  # an estimate below a proof is raised to it


def test_a_probability_gap_with_a_margin_and_other_conditions_get_no_interval_bound():
    """With margin 0 a probability gap fails exactly where the logit margin does (softmax keeps the
    order), so IBP applies; with a margin, or for other conditions, it does not."""
    import nnspec

    net, x = relu_case(4, 1)
    r = nnspec.check_module(net, x, "robustness within linf(0.001) using mads(budget=300)", domain=(0.0, 1.0))[0]
    assert r.verdict == "proven"
    for cond in ("robustness margin 0.1", "uncertainty kl > 0.01", "reachability prob(1) < 0.99"):
        r = nnspec.check_module(net, x, f"{cond} within linf(0.001) using mads(budget=300)", domain=(0.0, 1.0))[0]
        assert r.bounds["lower"] is None and r.verdict != "proven"


def test_a_margin_within_float32_rounding_is_not_certified():
    """The proof is over float64 arithmetic on the weights; the model runs in float32, so a margin
    smaller than its rounding proves nothing."""
    net = nn.Sequential(nn.Linear(2, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        net[0].bias.zero_()
    x0 = torch.tensor([0.5 + 1e-7, 0.5])  # margin 1e-7: below float32's resolution at this scale
    assert certified_radius(net, (2,), x0, 0, 0.1, torch.zeros(2), torch.ones(2)) == 0.0
    wide = torch.tensor([0.6, 0.5])  # margin 0.1: the radius is 0.05, less a hair
    assert certified_radius(net, (2,), wide, 0, 0.1, torch.zeros(2), torch.ones(2)) == pytest.approx(0.05, rel=2e-3)


def test_an_interval_rule_that_fails_on_the_network_leaves_no_bound_and_no_crash(monkeypatch):
    import nnspec
    from nnspec.backends import soundness

    def broken(*args, **kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (1x7 and 6x3)")
    monkeypatch.setattr(soundness, "certified_radius", broken)
    net, x = relu_case(4, 1)
    r = nnspec.check_module(net, x, "robustness on logits within linf(0.01) using mads(budget=300)", domain=(0.0, 1.0))[0]
    assert r.bounds["lower"] is None and r.verdict != "proven"
    assert any(n.startswith("no interval bound (mat1 and mat2 shapes") for n in r.notes)
