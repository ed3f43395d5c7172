"""Branch and bound on smooth nonlinearities: a sigmoid, tanh, softplus or ELU neuron is split by
halving its input's interval (``relax.halved``), each halved interval's ends a constraint with a
multiplier of its own (``beta._bound_fixed``). Known answers: the halves cover their piece bit
for bit; no threshold above a point's value is ever proved; thresholds between alpha-CROWN's bound
and the best attack's value are proved, where input splitting (all there was before) is not."""

from __future__ import annotations

import pytest
import torch

from bench.smooth_bab import attacked, network
from nnspec.bounds import bab
from nnspec.bounds.engine import BoundEngine
from nnspec.bounds.graph import BoundGraph
from nnspec.bounds.relax import halved


def test_halves_cover_their_piece_exactly():
    gen = torch.Generator().manual_seed(0)
    for dtype in (torch.float64, torch.float32):
        l = (torch.randn(500, generator=gen, dtype=torch.float64) * 10).to(dtype)
        u = l + (torch.rand(500, generator=gen, dtype=torch.float64) * 10).to(dtype) + 1e-6
        assert torch.equal(torch.stack(halved(l, u, torch.zeros(500, dtype=torch.int32))), torch.stack([l, u]))
        code = torch.randint(1, 2**20, (500,), generator=gen, dtype=torch.int32)
        pl, pu = halved(l, u, code)
        left, right = halved(l, u, 2 * code), halved(l, u, 2 * code + 1)
        assert torch.equal(left[0], pl) and torch.equal(right[1], pu)  # the outer ends, bit for bit
        assert torch.equal(left[1], right[0])  # one shared middle
        assert bool((pl <= left[1]).all() and (left[1] <= pu).all())
        assert bool((l <= pl).all() and (pu <= u).all())
    # the outermost pieces end at l and u themselves at every depth
    l, u = torch.tensor([0.1] * 3, dtype=torch.float64), torch.tensor([0.7] * 3, dtype=torch.float64)
    first, last = halved(l, u, torch.tensor([2**k for k in (1, 9, 24)])), \
        halved(l, u, torch.tensor([2**(k + 1) - 1 for k in (1, 9, 24)]))
    assert bool((first[0] == 0.1).all() and (last[1] == 0.7).all())


@pytest.mark.parametrize("seed, d, eps, act", [(0, 60, 0.3, "tanh"), (0, 30, 0.1, "tanh"), (2, 30, 0.1, "tanh"),
                                               (1, 60, 0.4, "sigmoid"), (0, 60, 0.3, "gelu"), (1, 60, 0.3, "silu")])
def test_halving_proves_what_relaxation_and_input_splitting_do_not(seed, d, eps, act):
    net = network(seed, d, act)  # (bench.smooth_bab's: two layers of 16)
    engine = BoundEngine(BoundGraph.from_module(net, (d,)))
    torch.manual_seed(100 + seed)
    x0 = torch.randn(d, dtype=torch.float64)
    lo, hi = x0 - eps, x0 + eps
    C = torch.ones(1, 1, dtype=torch.float64)
    top = attacked(net, lo, hi, restarts=4, steps=150)
    root = float(engine.bound(lo[None], hi[None], C[None], method="alpha")[0, 0])
    assert root < top - 1e-3  # a gap for branch and bound to close
    # 70% of the way from alpha-CROWN's bound to the attack's value: neuron splitting proves it
    # in under a second on a quiet machine (0.1-0.4 s; input splitting, the only search for these
    # networks before, proved the first in none of 10 s)
    result = bab.verify(engine, lo, hi, C, root + 0.7 * (top - root), time_limit=30.0, mode="relu", milp_workers=1)
    assert result.proven and result.stop == "proven"
    # and never a threshold the attack's point refutes: the best bound stays below its value
    # (the default mode: input splitting, then halving)
    above = bab.verify(engine, lo, hi, C, top + 1e-6, time_limit=2.0, milp_workers=1)
    assert not above.proven and above.lower + top + 1e-6 <= top + 1e-9


def test_mixed_relu_and_smooth_network_stays_sound():
    """ReLU and sigmoid neurons split in one search: on a box around a point, no bound above the
    least value of 4,000 samples and that of the attack, and a bound above alpha-CROWN's."""
    for seed in range(3):
        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Linear(24, 12), torch.nn.ReLU(), torch.nn.Linear(12, 12),
                                  torch.nn.Sigmoid(), torch.nn.Linear(12, 8), torch.nn.Tanh(),
                                  torch.nn.Linear(8, 1)).double()
        engine = BoundEngine(BoundGraph.from_module(net, (24,)))
        x0 = torch.randn(24, dtype=torch.float64)
        lo, hi = x0 - 0.2, x0 + 0.2
        C = torch.ones(1, 1, dtype=torch.float64)
        with torch.no_grad():
            sampled = float(net(lo + (hi - lo) * torch.rand(4000, 24, dtype=torch.float64)).min())
        least = min(sampled, attacked(net, lo, hi, restarts=4, steps=150))
        root = float(engine.bound(lo[None], hi[None], C[None], method="alpha")[0, 0])
        result = bab.verify(engine, lo, hi, C, least + 1e-6, time_limit=3.0, milp_workers=1)
        assert not result.proven
        assert result.lower + least + 1e-6 <= least + 1e-9
        assert result.lower + least + 1e-6 > root  # the search closed part of the gap
