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
from tests.helpers import relu_net


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


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("norm", ["l1", "l2", "linf"])
def test_astar_reaches_the_exhaustive_value_and_its_lower_bound_never_exceeds_it(seed, norm):
    game, net, label = _toy(seed, norm)
    exact, _ = exhaustive_value(game)
    lip = margin_lipschitz(net, label, None, norm)
    full = admissible_astar(game, lip, max_queries=10**7)
    assert full.stop == "exact"
    if math.isinf(exact):
        assert math.isinf(full.upper) and full.witness is None
    else:
        assert full.upper == pytest.approx(exact) and full.lower == pytest.approx(exact)
        assert game.evaluate(full.witness[None])[0] < 0
    for budget in (10, 100, 1000):  # anytime: every intermediate lower bound is admissible
        part = admissible_astar(game, lip, max_queries=budget)
        assert part.lower <= exact + 1e-12 <= part.upper + 1e-12 or math.isinf(exact)
    lowers = [lo for _, lo, _ in full.trace]
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
    uppers = [u for _, u in res.trace]
    assert all(b <= a for a, b in zip(uppers, uppers[1:]))  # anytime: the upper bound only falls
