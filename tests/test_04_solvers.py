"""Solvers on tensors: MADS convergence, budgets, stop reasons, batching; projections; auglag."""

from __future__ import annotations

import math

import pytest
import torch

from nnspec.solvers import auglag
from nnspec.solvers.mads import BatchedMads, MadsOptions, minimize_mads
from nnspec.solvers.projection import project_l1, project_l2
from nnspec.solvers.result import StopReason

D = torch.float64
C = torch.tensor([0.3, -0.2, 0.7, 0.1, -0.5], dtype=D)


def smooth(x):
    return ((x - C) ** 2).sum(-1)


def nonsmooth(x):
    return (x - C).abs().sum(-1) + 0.5 * (x - C).abs().amax(-1)


@pytest.mark.parametrize("poll", ["gps", "orthomads"])
@pytest.mark.parametrize("f", [smooth, nonsmooth], ids=["smooth", "nonsmooth"])
def test_mads_converges_to_the_minimiser(poll, f):
    lo, hi = -torch.ones(5, dtype=D), torch.ones(5, dtype=D)
    res = minimize_mads(f, torch.zeros(5, dtype=D), lo, hi, MadsOptions(max_evals=5000, poll=poll))
    assert res.stop == StopReason.POLL_SIZE
    assert (res.x - C).abs().max() < 1e-4
    assert res.nfev <= 5000


def test_bounds_are_respected_and_active_bound_found():
    res = minimize_mads(smooth, torch.zeros(5, dtype=D), torch.zeros(5, dtype=D), torch.ones(5, dtype=D),
                        MadsOptions(max_evals=4000))
    expected = C.clamp(0, 1)
    assert (res.x - expected).abs().max() < 1e-4 and res.x.min() >= 0


def test_budget_stop_and_trace():
    res = minimize_mads(smooth, torch.zeros(5, dtype=D), -torch.ones(5, dtype=D), torch.ones(5, dtype=D),
                        MadsOptions(max_evals=100, search=4))
    assert res.stop == StopReason.BUDGET and res.nfev <= 100
    assert [t.queries for t in res.trace] == sorted(t.queries for t in res.trace)
    bests = [t.best for t in res.trace]
    assert all(a >= b for a, b in zip(bests, bests[1:]))  # the incumbent never gets worse


def test_target_stops_early():
    res = minimize_mads(smooth, torch.zeros(5, dtype=D), -torch.ones(5, dtype=D), torch.ones(5, dtype=D),
                        MadsOptions(max_evals=5000, target=0.5))
    assert res.stop == StopReason.TARGET and res.fun < 0.5


def test_batched_problems_match_independent_runs():
    lo, hi = -torch.ones(3, 5, dtype=D), torch.ones(3, 5, dtype=D)
    shifts = torch.tensor([[0.0], [0.2], [-0.3]], dtype=D)
    x0 = torch.zeros(3, 5, dtype=D)
    opts = MadsOptions(max_evals=600, poll="gps", search=0)
    solver = BatchedMads(x0.clone(), ((x0 - C - shifts) ** 2).sum(-1), lo, hi, opts)
    calls = 0
    while not solver.done():
        idx, cand = solver.ask()
        if idx.numel() == 0:
            break
        calls += 1
        solver.tell(((cand - C - shifts[idx, None, :]) ** 2).sum(-1))
    for p, res in enumerate(solver.results()):
        alone = minimize_mads(lambda x: ((x - C - shifts[p]) ** 2).sum(-1), x0[p], lo[p], hi[p], opts)
        assert torch.allclose(res.x, alone.x) and res.nfev == alone.nfev
    assert calls == max(r.nit for r in solver.results())  # one evaluation call per iteration for all


def test_random_direction_subset_limits_points_per_iteration():
    opts = MadsOptions(max_evals=10_000, directions=8, search=4)
    solver = BatchedMads(torch.zeros(1, 100, dtype=D), torch.zeros(1, dtype=D), -torch.ones(1, 100, dtype=D),
                         torch.ones(1, 100, dtype=D), opts)
    _, cand = solver.ask()
    assert cand.shape == (1, 8 + 4 + 1 + 4, 100)  # poll, random search, speculative, gradient steps


def test_same_seed_same_path():
    opts = MadsOptions(max_evals=500, seed=3)
    a = minimize_mads(nonsmooth, torch.zeros(5, dtype=D), -torch.ones(5, dtype=D), torch.ones(5, dtype=D), opts)
    b = minimize_mads(nonsmooth, torch.zeros(5, dtype=D), -torch.ones(5, dtype=D), torch.ones(5, dtype=D), opts)
    assert torch.equal(a.x, b.x) and a.trace == b.trace


def test_projections():
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(50, 9, generator=gen, dtype=D)
    r = torch.rand(50, generator=gen, dtype=D) * 3
    p1, p2 = project_l1(v, r), project_l2(v, r)
    assert (p1.abs().sum(1) <= r + 1e-9).all() and (p2.norm(dim=1) <= r + 1e-9).all()
    inside = v.abs().sum(1) <= r
    assert torch.allclose(p1[inside], v[inside])
    # optimality of the L1 projection: soft-thresholding with one threshold for every coordinate
    rows = (~inside).nonzero().flatten()
    assert rows.numel() > 0
    for i in rows.tolist():
        keep = p1[i] != 0
        theta = v[i].abs()[keep] - p1[i].abs()[keep]
        assert (theta.max() - theta.min()) < 1e-9  # one threshold per row
        assert (v[i].abs()[~keep] <= theta.min() + 1e-9).all()  # zeroed entries lie below it
    assert torch.allclose(project_l1(torch.tensor([[3.0, 1.0]], dtype=D), 2.0), torch.tensor([[2.0, 0.0]], dtype=D))
    assert torch.allclose(project_l1(torch.tensor([[2.0, 1.5]], dtype=D), 1.5), torch.tensor([[1.0, 0.5]], dtype=D))


def test_auglag_barrier_and_update():
    f = torch.tensor([[1.0, 1.0, 1.0]], dtype=D)
    c = torch.tensor([[-0.5, 0.05, 0.2]], dtype=D)
    lam, shift = torch.tensor([1.0], dtype=D), torch.tensor([0.1], dtype=D)
    theta = auglag.barrier(f, c, lam, shift)
    assert theta[0, 0] == pytest.approx(1.0 - 0.1 * math.log(0.6))
    assert theta[0, 1] > theta[0, 0] and math.isinf(theta[0, 2])
    new_lam, new_shift = auglag.update(lam, shift, torch.tensor([0.05], dtype=D))
    assert new_lam.item() == pytest.approx(2.0) and new_shift.item() == pytest.approx(0.05)
