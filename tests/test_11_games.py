"""DeepGame core: the grid game, sound Lipschitz constants, admissible A* against exhaustive truth,
feature partitions. (The backend that runs games from specs is still to come.)"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nnspec.solvers.games import features
from nnspec.solvers.games.astar import admissible_astar
from nnspec.solvers.games.exhaustive import exhaustive_value
from nnspec.solvers.games.game import GridGame
from nnspec.solvers.games.lipschitz import margin_lipschitz
from tests.helpers import relu_case, relu_net


def _toy(seed: int, norm: str, n: int = 3, tau: float = 0.05, radius: float = 0.6):
    net = relu_net((n, 8, 8, 3), seed=seed)
    x0 = np.full(n, 0.5)
    with torch.no_grad():
        label = int(net(torch.tensor(x0)[None]).argmax())

    def margin(points: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            y = net(torch.from_numpy(points))
        others = y.clone()
        others[:, label] = -math.inf
        return (y[:, label] - others.max(1).values).numpy()

    game = GridGame(x0, np.zeros(n), np.ones(n), tau, norm, radius, tuple(np.array([i]) for i in range(n)), margin)
    return game, net, label


def _astar_toy(seed: int, norm: str):
    """A toy game, its exhaustive value, a sound L, and A* run to the end."""
    game, net, label = _toy(seed, norm)
    exact, _ = exhaustive_value(game)
    lip = margin_lipschitz(net, label, None, norm)
    return game, exact, lip, admissible_astar(game, lip, max_queries=10**7)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("norm", ["l1", "l2", "linf"])
def test_astar_reaches_the_exhaustive_value_and_its_lower_bound_never_exceeds_it(seed, norm):
    game, exact, lip, full = _astar_toy(seed, norm)
    assert full.stop == "exact"
    if math.isinf(exact):
        assert math.isinf(full.upper) and full.witness is None
    else:
        assert full.upper == pytest.approx(exact) and full.lower == pytest.approx(exact)
        assert game.evaluate(full.witness[None])[0] < 0
    for budget in (10, 100, 1000):  # anytime: every intermediate lower bound is admissible
        part = admissible_astar(game, lip, max_queries=budget)
        assert part.lower <= exact + 1e-12 <= part.upper + 1e-12 or math.isinf(exact)
    lowers = [lo for _, lo, _, _ in full.trace]
    assert all(b >= a - 1e-12 for a, b in zip(lowers, lowers[1:]))  # the lower bound only rises


def test_an_underestimated_lipschitz_constant_breaks_admissibility_which_is_why_it_must_be_sound():
    found = False
    for seed in range(8):
        game, net, label = _toy(seed, "l1")
        exact, _ = exhaustive_value(game)
        if math.isinf(exact):
            continue
        wrong = admissible_astar(game, margin_lipschitz(net, label, None, "l1") / 1000, max_queries=50)
        found |= wrong.lower > exact + 1e-9 or wrong.upper >= exact
    assert found


@pytest.mark.parametrize("norm", ["l1", "l2", "linf"])
def test_margin_lipschitz_is_sound(norm):
    net = relu_net((5, 16, 16, 4), seed=7)
    lip = margin_lipschitz(net, 0, None, norm)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2000, 5, generator=gen, dtype=torch.float64)
    y = x + 0.05 * torch.randn(2000, 5, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        fx, fy = net(x), net(y)
    dist = torch.linalg.vector_norm(x - y, ord={"l1": 1, "l2": 2, "linf": math.inf}[norm], dim=1)
    for t in range(1, 4):
        slope = ((fx[:, 0] - fx[:, t]) - (fy[:, 0] - fy[:, t])).abs() / dist
        assert float(slope.max()) <= lip
    with pytest.raises(ValueError, match="no sound Lipschitz bound for layer Conv2d"):
        margin_lipschitz(torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3)), 0, None, "l2")


def test_partitions_cover_every_dimension_once():
    shape = (3, 16, 16)
    rng = np.random.default_rng(0)
    img = rng.random(shape)
    for parts in (features.grid(shape, 4, 4), features.superpixels(img, 12),
                  features.saliency(img, lambda p: p.sum(axis=1), 10)):
        covered = np.sort(np.concatenate(parts))
        assert np.array_equal(covered, np.arange(img.size))
    boxes = features.grid((1, 8, 8), 2, 2)
    assert [len(b) for b in boxes] == [16] * 4 and list(boxes[0][:4]) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="does not fit"):
        features.grid((1, 8, 8), 9, 1)


def test_saliency_ranks_the_dimensions_that_matter_first():
    x = np.full(16, 0.2)
    weights = np.arange(16, dtype=float)  # dimension 15 matters most
    parts = features.saliency(x, lambda p: -(p * weights).sum(axis=1), 4)
    assert set(parts[0]) == {12, 13, 14, 15}


def test_sift_partition_on_a_textured_image():
    yy, xx = np.mgrid[0:64, 0:64]
    img = 0.5 + 0.25 * np.sin(xx / 3.0) * np.cos(yy / 5.0)
    img[20:30, 20:40] = 1.0
    parts = features.sift(img[None], max_features=8)
    assert 1 <= len(parts) <= 8
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(64 * 64))
    with pytest.raises(ValueError, match="SIFT"):
        features.sift(np.zeros((1, 8, 8)))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("norm", ["l0", "l1", "l2", "linf"])
def test_mcts_upper_bound_is_a_real_violation_never_below_the_exhaustive_value(seed, norm):
    from nnspec.solvers.games.mcts import mcts

    game, net, label = _toy(seed, norm, tau=0.1 if norm != "l0" else 1.0, radius=0.6 if norm != "l0" else 3)
    exact, _ = exhaustive_value(game)
    res = mcts(game, max_queries=4000, playouts=16, seed=seed)
    if math.isinf(exact):
        assert res.witness is None and math.isinf(res.upper)
        return
    assert res.witness is not None and game.evaluate(res.witness[None])[0] < 0
    assert res.upper >= exact - 1e-9
    assert res.upper == pytest.approx(exact)  # on these toys the search converges to the game value
    uppers = [u for _, u, _ in res.trace]
    assert all(b <= a for a, b in zip(uppers, uppers[1:]))  # anytime: the upper bound only falls


def _restricted(game: GridGame, dims: np.ndarray) -> GridGame:
    """The game in which only ``dims`` may move."""
    def evaluate(points):
        full = np.repeat(game.x0[None], len(points), axis=0)
        full[:, dims] = points
        return game.evaluate(full)
    return GridGame(game.x0[dims], game.lower[dims], game.upper[dims], game.tau, game.norm, game.radius,
                    tuple(np.array([i]) for i in range(len(dims))), evaluate)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_alpha_beta_equals_plain_minimax_and_prunes(seed):
    from nnspec.solvers.games.alphabeta import alpha_beta, minimax

    game, net, label = _toy(seed, "l1", n=4, tau=0.1, radius=0.8)
    feats = [np.array([0]), np.array([1]), np.array([2, 3])]
    exact = [min(exhaustive_value(_restricted(game, f))[0], game.radius) for f in feats]
    lip = margin_lipschitz(net, label, None, "l1")

    def bounds(i, cutoff):
        res = admissible_astar(_restricted(game, feats[i]), lip, max_queries=10**6)
        return min(res.lower, game.radius), min(res.upper, game.radius)

    result = alpha_beta(len(feats), lambda i: bounds(i, -math.inf)[1], bounds)
    assert result.lower == pytest.approx(minimax(exact)) == pytest.approx(result.upper)
    for f in result.pruned:
        assert exact[f] <= result.lower + 1e-12


def test_sound_lipschitz_of_the_demo_mlp_from_its_onnx_file():
    from nnspec.models.loading import load_model
    from nnspec.solvers.games.lipschitz import layers_of_onnx, margin_from_layers
    from tests.conftest import ROOT

    path = ROOT / "specs/models/digits_mlp.onnx"
    weights, factor = layers_of_onnx(path)
    assert [w.shape for w in weights] == [(32, 64), (32, 32), (10, 32)]
    lip = margin_from_layers(weights, factor, 3, None, "linf")
    model = load_model(path, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(500, 1, 8, 8, generator=gen, dtype=torch.float64)
    y = (x + 0.02 * torch.randn(x.shape, generator=gen, dtype=torch.float64))
    fx, fy = model(x), model(y)
    for t in range(10):
        if t != 3:
            s = ((fx[:, 3] - fx[:, t]) - (fy[:, 3] - fy[:, t])).abs() / (x - y).reshape(500, -1).abs().amax(1)
            assert float(s.max()) <= lip



@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_sound_lipschitz_of_the_demo_cnn_conv_and_maxpool(norm):
    from nnspec.models.loading import load_model
    from nnspec.solvers.games.lipschitz import layers_of_onnx, margin_from_layers
    from tests.conftest import ROOT

    path = ROOT / "specs/models/digits_cnn.onnx"
    weights, factor = layers_of_onnx(path)
    assert [w[0] if isinstance(w, tuple) else "dense" for w in weights] == ["conv", "pool", "conv", "dense"]
    model = load_model(path, dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(400, 1, 8, 8, generator=gen, dtype=torch.float64)
    label = 2
    lip = margin_from_layers(weights, factor, label, None, norm)
    ord_ = {"l1": 1, "l2": 2, "linf": math.inf}[norm]
    y = x + 0.01 * torch.randn(x.shape, generator=gen, dtype=torch.float64)
    fx, fy = model(x), model(y)
    dist = torch.linalg.vector_norm((x - y).reshape(400, -1), ord=ord_, dim=1)
    for t in range(10):
        if t != label:
            slope = ((fx[:, label] - fx[:, t]) - (fy[:, label] - fy[:, t])).abs() / dist
            assert float(slope.max()) <= lip


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_game_backend_brackets_the_exact_distance_from_a_spec(seed):
    import nnspec
    from nnspec.solvers.milp import layers_of, min_distance

    net, x = relu_case(seed, 2)
    records = nnspec.check_module(net, x, "maximum safe radius within l1(1.5) using game(tau=0.1, budget=6000)",
                                  domain=(0.0, 1.0))
    for i, r in enumerate(records):
        exact = min_distance(layers_of(net), x[i].numpy(), r.label, None, "l1", max_radius=1.5).distance
        lower, upper = r.bounds["lower"], r.bounds["upper"]
        assert lower is not None and r.bounds["lower_method"].startswith(("s(x)/L", "interval bound", "Theorem 1", "CROWN", "alpha-CROWN"))
        assert lower <= exact + 1e-9  # sound on the continuous ball
        if upper is not None:
            assert r.witness["confirmed"] and upper >= exact - 1e-9
        assert r.passed  # a quantity: no requirement, nothing fails


def test_game_options_are_checked_in_the_spec():
    from nnspec.errors import SpecError
    from nnspec.semantics import lower
    from nnspec.syntax.parser import parse_text

    m = lower(parse_text("maximum safe radius within l2(1) using game(upper=mcts, lower=astar, tau=0.1)"))
    assert m.properties[0].solver.option_dict() == {"upper": "mcts", "lower": "astar", "tau": 0.1}
    with pytest.raises(SpecError) as info:
        lower(parse_text("maximum safe radius within l2(1) using game(uper=mcts, lower=alphabeta)"))
    messages = [(d.message, d.hint) for d in info.value.diagnostics]
    assert ("solver 'game' has no option 'uper'", "did you mean 'upper'?") in messages
    assert ("option 'lower' takes one of astar, none, not 'alphabeta'", None) in messages


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("norm", ["l0", "l1", "l2", "linf"])
def test_best_first_upper_bound_is_a_real_violation_and_reaches_the_exhaustive_value(seed, norm):
    from nnspec.solvers.games.bestfirst import best_first

    game, net, label = _toy(seed, norm, tau=0.1 if norm != "l0" else 1.0, radius=0.6 if norm != "l0" else 3)
    exact, _ = exhaustive_value(game)
    res = best_first(game, max_queries=4000, weight=1.0)
    if math.isinf(exact):
        assert res.witness is None and math.isinf(res.upper)
        return
    assert res.witness is not None and game.evaluate(res.witness[None])[0] < 0
    assert res.upper == pytest.approx(exact)
    assert res.upper == pytest.approx(float(game.distance(res.witness[None])[0]))
    uppers = [u for _, u, _ in res.trace]
    assert all(b < a for a, b in zip(uppers, uppers[1:]))  # anytime: each entry is an improvement
    assert res.queries <= 4000


def test_best_first_keeps_to_its_budget_and_candidate_moves():
    from nnspec.solvers.games.bestfirst import best_first

    game, _, _ = _toy(0, "l1", n=3, tau=0.02, radius=2.0)
    for budget in (1, 7, 50, 333):
        assert best_first(game, max_queries=budget).queries <= budget
    calls = []
    counted = GridGame(game.x0, game.lower, game.upper, game.tau, game.norm, game.radius, game.features,
                       lambda p: calls.append(p.copy()) or game.evaluate(p))
    best_first(counted, max_queries=300, candidates=1)
    root_kids = calls[1]
    drops = game.evaluate(game.x0[None])[0] - game.evaluate(root_kids)
    best_move = root_kids[int(np.argmax(drops))] - game.x0  # the one candidate move
    assert len(calls) > 3
    for batch in calls[2:]:  # every later child = one root child + candidate moves only
        for p in batch:
            extra = p - game.x0
            assert ((np.abs(extra) > 1e-12) & (np.abs(best_move) < 1e-12)).sum() <= 1


@pytest.mark.parametrize("norm", ["l0", "l1", "l2", "linf"])
def test_child_distances_match_the_children_built_in_full(norm):
    game, _, _ = _toy(1, norm, n=5, tau=0.3, radius=2.0)
    rng = np.random.default_rng(0)
    for _ in range(20):
        steps = rng.integers(-3, 4, size=5)
        x = game.points(steps[None])[0]
        _, dims, signs = game.move_arrays(steps)
        kids = np.repeat(steps[None], len(dims), axis=0)
        kids[np.arange(len(dims)), dims] += signs
        fast = game.child_distances(x, float(game.distance(x[None])[0]), dims, signs)
        assert np.allclose(fast, game.distance(game.points(kids)), atol=1e-12)


@pytest.mark.parametrize("seed", [4, 5, 7])
def test_theorem_1_lower_bound_is_sound_and_beats_s_over_l(seed):
    """A* with the margin shifted by L * beta checks DeepGame's Theorem 1 condition where it is
    needed; the resulting bound of the continuous radius never exceeds the exact (MILP) radius."""
    import nnspec
    from nnspec.solvers.milp import layers_of, min_distance

    net, x = relu_case(seed, 2)
    records = nnspec.check_module(net, x, "maximum safe radius within linf(1) using game(tau=0.01, budget=8000, "
                                  "upper=none, ibp=false)", domain=(0.0, 1.0))
    beats = 0
    for i, r in enumerate(records):
        exact = min_distance(layers_of(net), x[i].numpy(), r.label, None, "linf", max_radius=1.0).distance
        lower = r.bounds["lower"]
        assert lower <= exact + 1e-9
        if r.bounds["lower_method"].startswith("Theorem 1"):
            assert lower > r.s_centre / r.lipschitz
            assert any("beta = 0.005" in n for n in r.notes)
            beats += 1
    assert beats >= 1


def test_theorem_1_says_when_its_condition_fails_at_the_centre():
    import nnspec

    net, x = relu_case(0, 1)
    r = nnspec.check_module(net, x, "maximum safe radius within l1(1.5) using game(tau=0.02, budget=3000, upper=none, ibp=false)",
                            domain=(0.0, 1.0))[0]
    assert any("Theorem 1's condition fails at the centre" in n and "it needs tau <" in n for n in r.notes)
    assert r.bounds["lower_method"].startswith("s(x)/L")


def test_an_estimated_lipschitz_constant_gives_an_estimate_never_a_lower_bound():
    import nnspec

    net = torch.nn.Linear(4, 2).double()
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, -2.0, 0.5, 0.0], [0.0, 1.0, -0.5, 1.0]]))
        net.bias.zero_()
    x = torch.tensor([[0.9, 0.1, 0.6, 0.2]], dtype=torch.float64)  # margin 0.9-0.2+0.3-(0.1-0.3+0.2) = 1.0
    r = nnspec.check_module(net, x, "maximum safe radius within linf(1) using game(lipschitz_source=estimate, "
                            "tau=0.05, budget=3000, ibp=false)", domain=(0.0, 1.0))[0]
    assert r.bounds["lower"] is None and r.bounds["lower_method"] is None
    assert r.lipschitz == pytest.approx(1.0 + 3.0 + 1.0 + 1.0, rel=1e-6)  # ||w0 - w1||_1, the dual of linf
    assert r.bounds["estimate"] == pytest.approx(1.0 / 6.0, rel=1e-6)
    assert any("not a lower bound" in n for n in r.notes)
    assert all(t.get("lower") is None for t in r.trace)  # A* under an estimated L: plotted as an estimate
    assert any(t.get("estimate") is not None for t in r.trace)


def test_best_first_and_astar_run_all_centres_in_lockstep_with_the_same_results_as_one_at_a_time():
    import nnspec
    from nnspec.models.loading import from_module

    net, x = relu_case(4, 4)
    # both searches in lockstep: best-first for the upper bound, then A* (Theorem 1) for the lower
    spec = "maximum safe radius within linf(0.5) using game(budget=3000, tau=0.05, ibp=false)"
    together = from_module(net, (4,), dtype=torch.float64)
    joint = nnspec.check_module(together, x, spec, domain=(0.0, 1.0))
    calls = found = 0
    for i in range(4):
        alone = from_module(net, (4,), dtype=torch.float64)
        (one,) = nnspec.check_module(alone, x[i:i + 1], spec, domain=(0.0, 1.0))
        calls += alone.calls
        assert joint[i].queries == one.queries and joint[i].stop == one.stop
        for bound in ("upper", "lower"):
            assert joint[i].bounds[bound] == one.bounds[bound] or \
                joint[i].bounds[bound] == pytest.approx(one.bounds[bound], rel=1e-9)
        assert [n for n in joint[i].notes if "Theorem 1" in n] == [n for n in one.notes if "Theorem 1" in n]
        found += joint[i].witness is not None and joint[i].witness["confirmed"]
    assert found >= 2 and all("lower: " in r.stop for r in joint)
    assert together.calls < calls / 2  # one model call per round for all four centres


def _demo_mlp_records(spec: str, count: int = 6):
    import nnspec
    from nnspec.models.loading import load_model
    from tests.conftest import ROOT

    model = load_model(ROOT / "specs/models/digits_mlp.onnx")
    data = np.load(ROOT / "specs/models/digits_test.npz")
    x = torch.from_numpy(data["x"][:count])
    return model, x, data["y"][:count], nnspec.check_module(model, x, spec, labels=data["y"][:count].tolist())


def test_violations_found_along_the_way_are_confirmed_and_farther_than_the_witness():
    _, _, _, records = _demo_mlp_records("maximum safe radius within l2(3) using game(budget=3000, tau=0.25)")
    assert sum(len(r.milestones) for r in records) >= 3
    for r in records:
        for m in r.milestones:
            assert m["confirmed"] and m["s"] < 0 and m["distance"] >= r.witness["distance"] - 1e-9
            assert m["found_at"] <= r.queries and len(np.asarray(m["x"]).ravel()) == 64
        found = [m["found_at"] for m in sorted(r.milestones, key=lambda m: -m["distance"])]
        assert found == sorted(found)  # the farther, the earlier: the upper bound only falls


def test_a_witness_that_fails_confirmation_gives_way_to_a_confirmed_milestone():
    import dataclasses

    from nnspec.properties.expressions import ConfidenceGap
    from nnspec.properties.regions import Ball
    from nnspec.results.confirm import confirm
    from nnspec.results.records import Outcome, RadiusBounds, Verdict, Witness

    model, x, y, records = _demo_mlp_records("maximum safe radius within l2(3) using game(budget=3000, tau=0.25)", 1)
    real = records[0].witness
    fake = Witness(x=x[0].tolist(), distance=0.0, s=-1.0, output=[], confirmed=False)  # the centre: no violation
    kept = Witness(x=real["x"], distance=real["distance"], s=float("nan"), output=[], confirmed=False, found_at=7)
    bad = dataclasses.replace(kept, x=x[0].tolist(), found_at=3)
    outcome = Outcome(Verdict.VIOLATED, s_centre=1.0, bounds=RadiusBounds(upper=0.0), witness=fake, queries=10,
                      seconds=0.0, stop="budget", centre_output=[], milestones=(bad, kept))
    out = confirm(outcome, model=model, ball=Ball("l2", 3.0), expression=ConfidenceGap("untargeted", None, 0.0, "logits"),
                  centre=x[0], label=int(y[0]), lower=torch.zeros(64), upper=torch.ones(64), outputs_are_logits=True)
    assert out.witness.confirmed and out.witness.found_at == 7 and out.bounds.upper == pytest.approx(real["distance"])
    assert out.milestones == () and out.dropped_witnesses == 1
    assert any("milestone(s) dropped" in n for n in out.notes) and any("closest confirmed milestone" in n for n in out.notes)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("norm", ["l1", "l2", "linf"])
def test_astar_seeded_with_a_known_violation_stays_admissible_and_stops_sooner(seed, norm):
    game, exact, lip, plain = _astar_toy(seed, norm)
    for known in (exact, exact * 1.5 if math.isfinite(exact) else math.inf):
        seeded = admissible_astar(game, lip, max_queries=10**7, known_upper=known)
        assert seeded.lower <= exact + 1e-12 and seeded.stop == "exact"
        assert seeded.lower == pytest.approx(exact) or math.isinf(exact)
        assert seeded.queries <= plain.queries
    if math.isfinite(exact) and exact > 0:
        loose = admissible_astar(game, lip, max_queries=10**7, epsilon=exact)  # any bound within exact will do
        assert loose.stop in ("converged", "exact") and loose.lower <= exact + 1e-12
        assert loose.queries <= plain.queries


def test_game_searches_stop_on_time_and_on_convergence():
    import nnspec

    net, x = relu_case(4, 2)
    slow = nnspec.check_module(net, x, "maximum safe radius within linf(1) using game(tau=0.001, budget=10000000, "
                               "time=0.5)", domain=(0.0, 1.0))
    for r in slow:
        assert "upper: " in r.stop and "lower: time" in r.stop
        assert r.seconds < 5  # the limit is per input, all bounds together (IBP and set-up aside)
    # l0: a violation one pixel away cannot be beaten, so the search stops there
    _, _, _, records = _demo_mlp_records("maximum safe radius within l0(12) using game(budget=20000)")
    ones = [r for r in records if r.bounds["upper"] == 1]
    assert ones and all(r.stop == "upper: converged" and r.queries < 20000 for r in ones)


def test_astar_stops_once_the_bounds_are_within_epsilon():
    game, exact, lip, plain = _astar_toy(3, "l2")  # exact 0.536
    loose = admissible_astar(game, lip, max_queries=10**7, epsilon=exact / 2)
    assert loose.stop == "converged" and loose.upper - loose.lower <= exact / 2
    assert loose.lower <= exact <= loose.upper and loose.queries < plain.queries


def test_the_game_rules_moves_clipping_monotone_plays_and_feature_ownership():
    """Player I's features own the moves; Player II moves one dimension by +-tau, clipped to the
    domain; a dimension keeps the direction it first took (every grid input is reached so once);
    a move the domain clips away is not offered."""
    x0 = np.array([0.0, 0.5, 0.95])
    game = GridGame(x0, np.zeros(3), np.ones(3), 0.1, "l1", 0.3, (np.array([2]), np.array([0, 1])),
                    lambda p: np.ones(len(p)))
    feats, dims, signs = game.move_arrays(np.zeros(3, dtype=np.int64))
    assert list(zip(feats.tolist(), dims.tolist(), signs.tolist())) == [
        (0, 2, 1), (0, 2, -1), (1, 0, 1), (1, 1, 1), (1, 1, -1)]  # dimension 0 sits on the lower bound
    after = np.array([0, 1, 1])  # dimension 1 moved up, dimension 2 moved up to the bound (0.95 -> 1.0)
    assert np.allclose(game.points(after[None])[0], [0.0, 0.6, 1.0])
    _, dims, signs = game.move_arrays(after)
    assert list(zip(dims.tolist(), signs.tolist())) == [(0, 1), (1, 1)]  # 2 is clipped, 1 never goes back
    assert game.distance(game.points(np.array([[3, 0, 0]])))[0] == pytest.approx(0.3)  # on the ball's edge
    with pytest.raises(ValueError, match="partition"):
        GridGame(x0, np.zeros(3), np.ones(3), 0.1, "l1", 0.3, (np.array([0]), np.array([0, 1])), game.evaluate)
