"""The written-out bound and gradient of dense ReLU chains (``nnspec.bounds.dense``), which
branch and bound's ReLU splitting optimises its parameters with: the engine's bound and
autograd's gradient, on random chains with splits, slopes, multipliers and hull facets."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nnspec.bounds import BoundEngine, BoundGraph
from nnspec.bounds.dense import DenseChain
from nnspec.bounds.relax import cut_at_splits
from nnspec.bounds.hull import facets_at, unstable
from tests.helpers import relu_net


def _chain(widths, seed):
    return BoundEngine(BoundGraph.from_module(relu_net(widths, seed=seed), (widths[0],)))


def _case(engine, B, S, seed, shared_box=True, facets=True, no_slopes=()):
    """Bounds of the batch's subdomains (root CROWN bounds cut at random splits), random
    parameters, and facets at random points where ``facets``."""
    gen = torch.Generator().manual_seed(seed)
    n0 = engine.ops[0].shape[0]
    lo = torch.rand(1, n0, generator=gen, dtype=torch.float64) - 0.5
    hi = lo + 0.6 * torch.rand(1, n0, generator=gen, dtype=torch.float64)
    root = engine.intervals(lo, hi, "crown")
    chain = DenseChain.of(engine)
    if shared_box:
        box = (lo.expand(B, -1), hi.expand(B, -1))
    else:  # each subdomain its own box inside the root's (its bounds still hold there)
        cut = lo + (hi - lo) * torch.rand(B, n0, generator=gen, dtype=torch.float64)
        box = (torch.minimum(cut, hi), hi.expand(B, -1))
    bounds, signs = {chain.input: box}, {}
    for pre in chain.preacts:
        l, u = (t.expand(B, -1) for t in root[pre])
        split = torch.randint(-1, 2, l.shape, generator=gen) * (torch.rand(l.shape, generator=gen) < 0.2)
        bounds[pre] = cut_at_splits(l, u, split.to(torch.int8))
        signs[pre] = split.double()[:, None]
    alphas = {r: torch.rand(B, S, engine.by_name[r].shape[0], generator=gen, dtype=torch.float64)
              for r in chain.relus if r not in no_slopes}
    betas = {p: torch.rand(B, S, engine.by_name[p].shape[0], generator=gen, dtype=torch.float64)
             for p in chain.preacts}
    found, mix = {}, {}
    if facets:
        for k, (relu, op) in enumerate(zip(chain.relus, chain.affines)):
            if k == 0:
                src_lo, src_hi, source = lo[0], hi[0], chain.input
            else:
                src_lo, src_hi = (t[0].clamp(min=0) for t in root[chain.preacts[k - 1]])
                source = chain.relus[k - 1]
            point = src_lo + (src_hi - src_lo) * torch.rand(src_lo.shape, generator=gen, dtype=torch.float64)
            neurons = unstable(*root[chain.preacts[k]])
            if len(neurons) == 0:
                continue
            found[relu] = facets_at(op.matrix, op.bias.reshape(-1), src_lo, src_hi, point, source, neurons)
            mix[relu] = torch.rand(B, S, op.shape[0], generator=gen, dtype=torch.float64)
    return bounds, signs, alphas, betas, found, mix


@pytest.mark.parametrize("seed,shared_box,facets,no_slopes", [
    (0, True, True, ()), (1, True, False, ()), (2, False, True, ()), (3, True, True, ("_3",)),
    (4, False, False, ("_1",)), (5, True, True, ()),
])
def test_the_bound_and_its_gradient_are_the_engines_and_autograds(seed, shared_box, facets, no_slopes):
    engine = _chain((6, 14, 12, 10, 4), seed)
    B, S = 9, 2
    bounds, signs, alphas, betas, found, mix = _case(engine, B, S, seed, shared_box, facets, no_slopes)
    if facets:
        assert found, "the case has facets"
    gen = torch.Generator().manual_seed(100 + seed)
    A0 = torch.randn(B, S, 4, generator=gen, dtype=torch.float64)
    for t in (*alphas.values(), *betas.values(), *mix.values()):
        t.requires_grad_(True)
    signed = {p: -betas[p] * signs[p] for p in betas}
    want = engine.backward(engine.graph.output, A0, bounds, alphas, betas=signed, facets=found, mix=mix)
    want.sum().backward()
    chain = DenseChain.of(engine)
    batch = chain.batch(bounds, found, mix)
    assert batch is not None and (batch.mid is not None) == shared_box
    with torch.no_grad():
        got, grads = chain.value_and_grad(batch, A0, alphas, {p: t.detach() for p, t in signed.items()}, mix)
    assert torch.allclose(got, want.detach(), rtol=1e-12, atol=1e-10)
    assert set(grads) == {f"alpha:{r}" for r in alphas} | {f"beta:{p}" for p in betas} | {f"mix:{r}" for r in mix}
    for r, a in alphas.items():
        assert torch.allclose(grads[f"alpha:{r}"], a.grad, atol=1e-10), r
    assert sum(float(a.grad.abs().sum()) for a in alphas.values()) > 0  # the case exercises them
    for p, b in betas.items():  # the engine takes -beta * sign: d/d beta = -sign * d/d term
        assert torch.allclose(-signs[p] * grads[f"beta:{p}"], b.grad, atol=1e-10), p
    for r, m in mix.items():
        assert torch.allclose(grads[f"mix:{r}"], m.grad, atol=1e-10), r
    assert any(float(m.grad.abs().max()) > 0 for m in mix.values()) or not facets


@pytest.mark.parametrize("norm, shared_box, facets", [("l1", True, False), ("l2", False, True), ("l2", True, False)])
def test_over_a_ball_the_bound_and_its_gradient_are_the_engines_and_autograds(norm, shared_box, facets):
    from nnspec.bounds.balls import Ball, BallBox

    engine = _chain((6, 14, 12, 10, 4), 11)
    B, S = 7, 2
    bounds, signs, alphas, betas, found, mix = _case(engine, B, S, 11, shared_box, facets)
    lo, hi = bounds[DenseChain.of(engine).input]
    radius = torch.full((B,), 0.2 if norm == "l1" else 0.12, dtype=torch.float64)
    bounds["input"] = BallBox(lo, hi, Ball(norm, (lo + hi) / 2, radius))
    A0 = torch.randn(B, S, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for t in (*alphas.values(), *betas.values(), *mix.values()):
        t.requires_grad_(True)
    signed = {p: -betas[p] * signs[p] for p in betas}
    want = engine.backward(engine.graph.output, A0, bounds, alphas, betas=signed, facets=found, mix=mix)
    want.sum().backward()
    box = engine.backward(engine.graph.output, A0, {**bounds, "input": (lo, hi)}, alphas, betas=signed,
                          facets=found, mix=mix)
    assert bool((want > box + 1e-6).any())  # the ball is smaller than its box here
    chain = DenseChain.of(engine)
    with torch.no_grad():
        got, grads = chain.value_and_grad(chain.batch(bounds, found, mix), A0, alphas,
                                          {p: t.detach() for p, t in signed.items()}, mix)
    assert torch.allclose(got, want.detach(), rtol=1e-12, atol=1e-10)
    for r, a in alphas.items():
        assert torch.allclose(grads[f"alpha:{r}"], a.grad, atol=1e-9), r
    for p, b in betas.items():
        assert torch.allclose(-signs[p] * grads[f"beta:{p}"], b.grad, atol=1e-9), p
    for r, m in mix.items():
        assert torch.allclose(grads[f"mix:{r}"], m.grad, atol=1e-9), r


def test_float32_stays_close_to_float64():
    engine = _chain((6, 14, 12, 4), 7)
    bounds, signs, alphas, betas, found, mix = _case(engine, 5, 1, 7)
    A0 = torch.randn(5, 1, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    chain = DenseChain.of(engine)
    signed = {p: -betas[p] * signs[p] for p in betas}
    exact, _ = chain.value_and_grad(chain.batch(bounds, found, mix), A0, alphas, signed, mix)
    f32 = {n: (lo.float(), hi.float()) for n, (lo, hi) in bounds.items()}
    cast = lambda d: {k: v.float() for k, v in d.items()}  # noqa: E731
    fast, _ = chain.value_and_grad(chain.batch(f32, found, cast(mix)), A0.float(), cast(alphas), cast(signed),
                                   cast(mix))
    assert torch.allclose(fast.double(), exact, rtol=1e-4, atol=1e-4)


def test_only_plain_dense_chains_have_one():
    assert DenseChain.of(_chain((3, 5, 2), 0)) is not None
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2)).double()
    assert DenseChain.of(BoundEngine(BoundGraph.from_module(conv, (1, 4, 4)))) is None
    sigmoid = nn.Sequential(nn.Linear(3, 4), nn.Sigmoid(), nn.Linear(4, 2)).double()
    assert DenseChain.of(BoundEngine(BoundGraph.from_module(sigmoid, (3,)))) is None
    image = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).double()
    assert DenseChain.of(BoundEngine(BoundGraph.from_module(image, (2, 2)))) is None


def test_facets_for_each_box_leave_the_batch_to_the_engine():
    engine = _chain((6, 14, 12, 4), 8)
    bounds, signs, alphas, betas, found, mix = _case(engine, 3, 1, 8)
    relu, facet = next(iter(found.items()))
    op = DenseChain.of(engine).affines[0]
    lo, hi = bounds["input"][0][0], bounds["input"][1][0]
    x = lo + (hi - lo) * torch.rand(3, 1, lo.shape[0], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    per_box = facets_at(op.matrix, op.bias.reshape(-1), lo, hi, x, facet.source, facet.neurons)
    assert per_box.G.dim() == 4
    assert DenseChain.of(engine).batch(bounds, {**found, DenseChain.of(engine).relus[0]: per_box}, mix) is None
