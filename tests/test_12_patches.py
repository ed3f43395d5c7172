"""CROWN's intermediate bounds of convolutions in patches (``nnspec.bounds.patches``): the same
bounds as the dense backward pass, on every kind of convolution, only cheaper."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from nnspec.bounds import BoundEngine, BoundGraph, patches
from nnspec.bounds.balls import Ball


def _engine(net: nn.Module, shape) -> BoundEngine:
    return BoundEngine(BoundGraph.from_module(net.double().eval(), shape))


def _both(engine: BoundEngine, lo, hi, ball=None, method="crown") -> tuple[dict, dict, int]:
    """The bounds of every op with patches and without, and how many patch passes ran."""
    calls = []
    run = patches.run

    def counted(*args, **kwargs):
        calls.append(1)
        return run(*args, **kwargs)

    patches.run = counted
    try:
        with_patches = engine.intervals(lo, hi, method, ball=ball)
    finally:
        patches.run = run
    engine.use_patches = False
    try:
        dense = engine.intervals(lo, hi, method, ball=ball)
    finally:
        engine.use_patches = True
    return with_patches, dense, len(calls)


def _assert_same(a: dict, b: dict) -> None:
    for name in b:
        for x, y in zip(a[name], b[name]):
            assert torch.allclose(x, y, rtol=1e-9, atol=1e-9), (name, float((x - y).abs().max()))


_ACTIVATIONS = {"relu": nn.ReLU, "leaky": lambda: nn.LeakyReLU(0.1), "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


@settings(max_examples=20, deadline=None, derandomize=True)
@given(seed=st.integers(0, 10_000), kernel=st.sampled_from([1, 2, 3, 5]), stride=st.sampled_from([1, 2, 3]),
       padding=st.sampled_from([0, 1, 2]), dilation=st.sampled_from([1, 2]), groups=st.sampled_from([1, 2]),
       act=st.sampled_from(sorted(_ACTIVATIONS)), pool=st.booleans(), matrix=st.booleans())
def test_patches_give_the_dense_passes_bounds_on_any_convolution(seed, kernel, stride, padding, dilation, groups,
                                                                 act, pool, matrix):
    """Random two- and three-convolution nets (kernel, stride, padding, dilation, groups, each
    activation, with and without a max-pool between): every op's CROWN bounds with patches equal
    the dense pass's, and patches ran for the second convolution's neurons at least. Through a
    convolution the patches go by a matrix product (``matrix``) or, where that matrix would be
    large, by the transposed convolution: both the same."""
    torch.manual_seed(seed)
    a = _ACTIVATIONS[act]
    layers = [nn.Conv2d(2, 4, 3, padding=1), a(),
              nn.Conv2d(4, 4, kernel, stride=stride, padding=padding, dilation=dilation, groups=groups), a()]
    if pool:
        layers.append(nn.MaxPool2d(2))
    layers += [nn.Conv2d(4, 6, 3, padding=1), a(), nn.Flatten()]
    net = nn.Sequential(*layers)
    shape = (2, 10, 10)
    with torch.no_grad():
        n_out = net(torch.zeros((1,) + shape)).shape[1]
    net = nn.Sequential(*layers, nn.Linear(n_out, 3))
    x = torch.rand((2,) + shape, dtype=torch.float64)
    eps = 0.02 * (1 + seed % 3)
    engine = _engine(net, shape)
    second = engine.ops[3]
    assert second.back == "conv" and patches.chain(engine, second)
    limit = patches.MATRIX_LIMIT
    patches.MATRIX_LIMIT = limit if matrix else 0
    try:
        got, dense, runs = _both(engine, x - eps, x + eps)
    finally:
        patches.MATRIX_LIMIT = limit
    _assert_same(got, dense)
    l, u = got[second.name]
    assert runs >= 1 or not bool(((l < 0) & (u > 0)).any())  # (no unstable neuron: no pass at all)


def test_patches_are_taken_where_each_neuron_sees_a_small_window_and_cost_far_less():
    """A CNN shaped like DeepGame's (two 3 x 3 convolutions, a max-pool, two more): the bounds of
    the second convolution's 1,024 neurons go through patches of 3 x 3 and 5 x 5 instead of the
    whole 18 x 18 layer; the same bounds, and the sound: sampled outputs lie inside them."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(4, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(8 * 2 * 2, 20), nn.ReLU(), nn.Linear(20, 10))
    shape = (1, 20, 20)
    engine = _engine(net, shape)
    second = engine.by_name[engine.ops[3].name]
    steps = patches.chain(engine, second)
    assert [s.op.kind for s in steps] == ["affine", "relu", "affine", "input"]
    assert [s.size for s in steps] == [(1, 1), (3, 3), (3, 3), (5, 5)]
    x = torch.rand((1,) + shape, dtype=torch.float64)
    lo, hi = (x - 0.01).clamp(0, 1), (x + 0.01).clamp(0, 1)
    got, dense, runs = _both(engine, lo, hi)
    _assert_same(got, dense)
    assert runs >= 3  # the second, third and fourth convolutions (and the max-pool's differences)
    samples = lo + (hi - lo) * torch.rand((256,) + shape, dtype=torch.float64)
    with torch.no_grad():
        y = net(samples)
    l, u = got[engine.graph.output]
    assert bool((y >= l - 1e-9).all() and (y <= u + 1e-9).all())


def test_patches_over_an_l2_ball_end_in_the_balls_dense_minimum():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4 * 4 * 4, 3))
    shape = (1, 8, 8)
    engine = _engine(net, shape)
    x = torch.rand((2,) + shape, dtype=torch.float64)
    for norm in ("l2", "l1"):
        ball = Ball(norm, x.reshape(2, -1), torch.tensor([0.3, 0.6], dtype=torch.float64))
        got, dense, runs = _both(engine, torch.zeros_like(x), torch.ones_like(x), ball=ball)
        _assert_same(got, dense)
        assert runs >= 1


def test_no_patches_where_a_patch_would_cover_its_layer():
    """A 3 x 3 kernel on a 3 x 3 layer: the patch is the layer, so the pass stays dense."""
    net = nn.Sequential(nn.Conv2d(1, 2, 2), nn.ReLU(), nn.Conv2d(2, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2, 2))
    engine = _engine(net, (1, 4, 4))
    assert patches.chain(engine, engine.ops[3]) == []
    x = torch.rand((1, 1, 4, 4), dtype=torch.float64)
    got, dense, runs = _both(engine, x - 0.1, x + 0.1)
    _assert_same(got, dense)
    assert runs == 0


def test_dense_coefficients_go_to_patches_and_back():
    """``from_dense`` crops each row to the bounding box of its non-zeros (the largest box's size
    for all), ``to_dense`` puts it back; rows spread over the layer stay dense."""
    torch.manual_seed(3)
    a = torch.zeros((2, 3, 4, 9, 9), dtype=torch.float64)
    a[:, 0, :, 0:2, 7:9] = torch.rand((2, 4, 2, 2), dtype=torch.float64)
    a[:, 1, 1, 4, 4] = 1.0
    a[:, 2, 3, 8, 0:3] = -torch.rand((2, 3), dtype=torch.float64)
    p, y, x = patches.from_dense(a, (4, 9, 9))
    assert p.shape == (2, 3, 4, 2, 3)
    assert y.tolist() == [0, 4, 8] and x.tolist() == [7, 4, 0]
    assert torch.equal(patches.to_dense(p, y, x, (4, 9, 9)), a)
    a[:, 1, 1, 0, 0] = 1.0  # one row over most of the layer
    assert patches.from_dense(a, (4, 9, 9)) is None


@pytest.mark.parametrize("method", ["forward+crown"])
def test_the_forward_mode_with_crown_gets_the_same_bounds(method):
    torch.manual_seed(4)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                        nn.Flatten(), nn.Linear(4 * 5 * 5, 3))
    engine = _engine(net, (1, 10, 10))
    x = torch.rand((3, 1, 10, 10), dtype=torch.float64)
    got, dense, runs = _both(engine, x - 0.05, x + 0.05, method=method)
    _assert_same(got, dense)
    assert runs >= 1


# ---------------------------------------------------------------- networks past CROWN's default scale


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_past_crowns_scale_the_radius_search_goes_one_box_at_a_time_to_the_same_radius(seed, monkeypatch):
    """Past CROWN_SCALE a CROWN pass costs seconds per box, and most where every neuron is
    unstable, so the search starts from IBP's radius and goes up one box at a time: the same
    radius as the batched search (to its resolution), below the exact MILP radius, and no box it
    bounds with CROWN is past 8x that radius (the batched sweep starts at the question's radius)."""
    import nnspec.bounds.engine as engine_module
    from nnspec.bounds import certified_radius, margin_objectives
    from nnspec.solvers.milp import layers_of, min_distance
    from tests.helpers import relu_case

    net, x = relu_case(seed, 1, (4, 16, 16, 3))
    label = int(net(x).argmax())
    exact = min_distance(layers_of(net), x[0].numpy(), label, None, "linf", max_radius=1.0).distance
    engine = _engine(net, (4,))
    C = margin_objectives(3, label)
    args = (engine, x[0], C, 0.0, 1.0, torch.zeros(4), torch.ones(4))
    batched = certified_radius(*args, method="crown")
    assert not engine.past_crown_scale
    monkeypatch.setattr(engine_module, "CROWN_SCALE", 8)
    assert engine.past_crown_scale
    widths = []
    bound = engine.bound

    def recorded(lo, hi, *rest, method="crown", **kw):
        if method != "ibp":
            widths.append(float(((hi - lo) / 2).max()))
        return bound(lo, hi, *rest, method=method, **kw)

    monkeypatch.setattr(engine, "bound", recorded)
    one_at_a_time = certified_radius(*args, method="crown")
    assert one_at_a_time == pytest.approx(batched, rel=1e-2)  # (ONE_BOX_RESOLUTION)
    assert 0 < one_at_a_time <= exact + 1e-9
    assert max(widths) <= 8 * one_at_a_time + 1e-12


def _wide_net() -> tuple[nn.Module, torch.Tensor]:
    """A convolution of 8 x 24 x 24 = 4,608 neurons (past CROWN's default scale) and a dense head,
    and one input in [0, 1]."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 24 * 24, 3)).double()
    return net, torch.rand(1, 1, 26, 26, dtype=torch.float64)


def test_past_crowns_scale_the_default_gives_crown_its_bound_time_from_ibps_radius():
    """A convolution of 8 x 24 x 24 = 4,608 neurons, past CROWN's default scale: by default IBP's
    radius, then CROWN one box at a time for up to bound_time (anytime), which here finishes: the
    radius of bound=crown, labelled CROWN, its note saying so. With bound_time=0: IBP only, and
    its note says bound=crown certifies more. Every lower bound stays below the closest violation."""
    import nnspec

    net, x = _wide_net()
    spec = "robustness on logits within linf(0.01) using mads(budget=100, seed=0{})"
    default, = nnspec.check_module(net, x, spec.format(", bound_time=60"), domain=(0.0, 1.0))
    crown, = nnspec.check_module(net, x, spec.format(", bound=crown"), domain=(0.0, 1.0))
    ibp, = nnspec.check_module(net, x, spec.format(", bound_time=0"), domain=(0.0, 1.0))
    assert crown.bounds["lower_method"] == default.bounds["lower_method"] == "CROWN"
    assert default.bounds["lower"] == pytest.approx(crown.bounds["lower"], rel=1e-9)
    assert any("the default past 4,096 neurons per layer: IBP's radius, then CROWN one box at a time for up to "
               "bound_time=60 s" in n for n in default.notes)
    assert not any("ran out" in n or "proved no more" in n for n in default.notes)
    assert ibp.bounds["lower_method"] == "interval bound propagation"
    assert any("IBP is the default past 4,096 neurons per layer with bound_time=0, bound=crown certifies more" in n
               for n in ibp.notes)
    assert crown.bounds["lower"] > 1.5 * ibp.bounds["lower"] > 0
    for record in (default, crown, ibp):
        assert record.bounds["upper"] is None or record.bounds["lower"] <= record.bounds["upper"]


def _fake_excess(true_radius: float, ibp_radius: float, seconds: float, calls: list):
    """An ``excess`` for ``radius._one_box_at_a_time``: the method's bound exceeds what a proof needs
    by true_radius^2 - r^2 (falling faster than linearly, as bounds do), IBP's by ibp_radius^2 -
    r^2; each linear pass takes ``seconds`` and is recorded."""
    import time

    def excess(rs, method="crown"):
        if method == "ibp":
            return (ibp_radius ** 2 - rs ** 2) * 1e4
        calls.append(float(rs[0]))
        time.sleep(seconds)
        return (true_radius ** 2 - rs ** 2) * 1e4
    return excess


CENTRE = 1.0  # the fake excess at radius 0 (any positive value: the centre's margin)


def test_the_one_box_search_reaches_the_radius_in_a_few_passes_and_stops_at_its_deadline():
    import time

    from nnspec.bounds.radius import _one_box_at_a_time

    rs = torch.pow(8.0, -torch.arange(0, 16, dtype=torch.float64))  # radius 1
    calls: list = []
    full = _one_box_at_a_time(_fake_excess(0.003, 5e-5, 0.0, calls), rs, CENTRE)
    assert 0.003 * (1 - 0.01) <= full <= 0.003
    assert len(calls) <= 12  # bisection: 3 passes up and 12 halvings
    assert all(r <= 8 * 0.003 for r in calls)

    calls.clear()
    report = {"method": "crown", "stopped": False}
    started = time.perf_counter()
    early = _one_box_at_a_time(_fake_excess(0.003, 5e-5, 0.05, calls), rs, CENTRE,
                               deadline=time.perf_counter() + 0.17, report=report)
    assert time.perf_counter() - started < 0.17 + 0.1  # no pass started that would end past the deadline
    assert 2 <= len(calls) <= 4 and report["stopped"] and report["method"] == "crown"
    assert 8.0 ** -4 <= early <= 0.003  # at least the climb's first box, never past the truth

    calls.clear()
    report = {"method": "crown", "stopped": False}
    none = _one_box_at_a_time(_fake_excess(0.003, 5e-5, 0.05, calls), rs, CENTRE,
                              deadline=time.perf_counter() - 1, report=report)
    assert none == float(rs[5]) and calls == [] and report == {"method": "ibp", "stopped": True}  # IBP's radius
    assert _one_box_at_a_time(_fake_excess(0.0, 0.0, 0.0, []), rs, 12, 0.0) == 0.0


def test_the_one_box_search_tries_no_radius_past_a_known_violation_and_the_whole_box_first():
    from nnspec.bounds.radius import _one_box_at_a_time

    rs = torch.pow(8.0, -torch.arange(0, 16, dtype=torch.float64))
    calls: list = []
    r = _one_box_at_a_time(_fake_excess(0.003, 5e-5, 0.0, calls), rs, CENTRE, known_upper=0.002)
    assert 0.002 * (1 - 0.01) <= r < 0.002 and max(calls) < 0.002
    calls.clear()
    assert _one_box_at_a_time(_fake_excess(2.0, 5e-5, 0.0, calls), rs, CENTRE, whole=True) == 1.0
    assert calls == [1.0]
    calls.clear()
    r = _one_box_at_a_time(_fake_excess(0.3, 5e-5, 0.0, calls), rs, CENTRE, whole=True)
    assert calls[0] == 1.0 and calls.count(1.0) == 1 and 0.3 * (1 - 0.01) <= r <= 0.3


def test_past_crowns_scale_the_game_backends_default_runs_crown_once_and_does_not_escalate(monkeypatch):
    """The game backend proves before its searches; past CROWN's default scale that is IBP's radius,
    then CROWN for bound_time: labelled CROWN, below the closest violation, and not run a second
    time after the searches (the escalation to branch and bound, which CROWN's radius 0.0087 of the
    0.009 ball would get within the scale, with no violation closer than 0.0092)."""
    import nnspec
    import nnspec.backends.game as game

    net, x = _wide_net()
    calls = []
    proved_lower = game.proved_lower

    def counted(*args, **kwargs):
        calls.append(kwargs.get("escalate", False))
        return proved_lower(*args, **kwargs)

    monkeypatch.setattr(game, "proved_lower", counted)
    record, = nnspec.check_module(net, x, "maximum safe radius on logits within linf(0.009) using "
                                          "game(budget=400, tau=0.01, bound_time=60)", domain=(0.0, 1.0))
    assert record.bounds["lower_method"] == "CROWN" and calls == [False]
    assert any("then CROWN one box at a time for up to bound_time=60 s" in n for n in record.notes)
    assert record.bounds["upper"] is None or 0 < record.bounds["lower"] <= record.bounds["upper"]


def test_past_crowns_scale_a_ranges_default_enclosure_is_crowns_unless_bound_time_is_zero():
    """``reachability range`` past CROWN's default scale: one CROWN pass by default (no search, so
    no time to share), narrower than IBP's and holding every sampled value; bound_time=0: IBP's."""
    import nnspec

    net, x = _wide_net()
    spec = "reachability range logit(0) tolerance 0.01 within linf(0.02) using mads(budget=200, seed=0{})"
    default, = nnspec.check_module(net, x, spec.format(""), domain=(0.0, 1.0))
    ibp, = nnspec.check_module(net, x, spec.format(", bound_time=0"), domain=(0.0, 1.0))
    assert any(n.startswith("CROWN proves logit(0) stays within") for n in default.notes)
    assert any(n.startswith("interval bound propagation proves logit(0)") for n in ibp.notes)
    (low, high), (ibp_low, ibp_high) = default.value_bounds, ibp.value_bounds
    assert ibp_low <= low and high <= ibp_high and (high - low) < 0.5 * (ibp_high - ibp_low)
    samples = (x + 0.02 * (2 * torch.rand((512, 1, 26, 26), dtype=torch.float64) - 1)).clamp(0, 1)
    with torch.no_grad():
        y = net(samples)[:, 0]
    assert low <= float(y.min()) and float(y.max()) <= high


def test_an_anytime_search_stops_a_pass_that_runs_past_its_time():
    """The first CROWN pass on a wide network can take far longer than bound_time: the engine checks
    the deadline between its intermediate passes (``BoundEngine.stop_at``), so the search stops
    inside the pass, with IBP's radius, instead of finishing it."""
    import time

    from nnspec.bounds import certified_radius, margin_objectives
    from nnspec.bounds.engine import PassStopped

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Flatten(),
                        nn.Linear(8 * 22 * 22, 20), nn.ReLU(), nn.Linear(20, 20), nn.ReLU(), nn.Linear(20, 3)).double()
    engine = _engine(net, (1, 26, 26))
    assert engine.past_crown_scale
    x = torch.rand(1, 1, 26, 26, dtype=torch.float64)
    label = int(net(x).argmax())
    with engine.stop_at(time.perf_counter() - 1), pytest.raises(PassStopped):
        engine.intervals(x - 0.01, x + 0.01, "crown")
    assert engine.deadline is None
    engine.intervals(x - 0.01, x + 0.01, "crown")  # (no deadline outside it)

    entered = []
    crown_bounds = engine._crown_bounds

    def slow_first(op, bounds, rows=None):
        entered.append(op.name)
        if len(entered) == 1:
            time.sleep(0.3)
        return crown_bounds(op, bounds, rows)

    engine._crown_bounds = slow_first
    args = (engine, x.reshape(-1), margin_objectives(3, label), 0.0, 0.5, torch.zeros(676), torch.ones(676))
    report: dict = {}
    r = certified_radius(*args, method="crown", time_limit=0.1, anytime=True, report=report)
    ibp = certified_radius(*args, method="ibp")
    assert len(entered) == 1 and report == {"method": "ibp", "stopped": True} and r <= ibp
    entered.clear()
    full = certified_radius(*args, method="crown")
    assert len(entered) >= 4 and full > ibp


def test_past_crowns_scale_a_ranges_crown_pass_stops_at_bound_time():
    """A range's one CROWN pass past the scale stops at bound_time (here every pass is made to take
    longer) and the enclosure is IBP's, its note saying why."""
    import time

    import nnspec
    from nnspec.bounds.engine import BoundEngine

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Flatten(),
                        nn.Linear(8 * 22 * 22, 3)).double()
    x = torch.rand(1, 1, 26, 26, dtype=torch.float64)
    spec = "reachability range logit(0) tolerance 0.01 within linf(0.02) using mads(budget=200, seed=0{})"
    crown_bounds = BoundEngine._crown_bounds

    def slow(self, *args, **kwargs):
        time.sleep(0.3)
        return crown_bounds(self, *args, **kwargs)

    default, = nnspec.check_module(net, x, spec.format(", bound_time=60"), domain=(0.0, 1.0))
    ibp, = nnspec.check_module(net, x, spec.format(", bound_time=0"), domain=(0.0, 1.0))
    BoundEngine._crown_bounds = slow
    try:
        stopped, = nnspec.check_module(net, x, spec.format(", bound_time=0.1"), domain=(0.0, 1.0))
    finally:
        BoundEngine._crown_bounds = crown_bounds
    assert any(n.startswith("CROWN proves") for n in default.notes)
    assert stopped.value_bounds == ibp.value_bounds != default.value_bounds
    assert any(n.startswith("interval bound propagation proves") and
               n.endswith("(the default's CROWN pass ran past bound_time=0.1 s)") for n in stopped.notes)
