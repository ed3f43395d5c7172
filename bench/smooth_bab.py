"""Branch and bound on smooth networks: neuron halving against input splitting (issue 12).

Two-layer MLPs (16 sigmoid, tanh or softplus neurons each) on d inputs, an L-inf box of radius
eps around a random point, the objective the network's one output. The threshold sits ``--frac``
of the way from alpha-CROWN's bound to the least value a few projected gradient descents find (an
upper bound of the true minimum, so every threshold is below it). Each search gets ``--time``
seconds on one process:

    python -m bench.smooth_bab --act tanh --dims 30,60 --eps 0.1,0.3 --seeds 3
"""

from __future__ import annotations

import argparse
import time

import torch

from nnspec.bounds import bab
from nnspec.bounds.engine import BoundEngine
from nnspec.bounds.graph import BoundGraph

ACTIVATIONS = {"sigmoid": torch.nn.Sigmoid, "tanh": torch.nn.Tanh, "softplus": torch.nn.Softplus, "gelu": torch.nn.GELU,
               "silu": torch.nn.SiLU}


def network(seed: int, d: int, act: str) -> torch.nn.Module:
    torch.manual_seed(seed)
    f = ACTIVATIONS[act]
    return torch.nn.Sequential(torch.nn.Linear(d, 16), f(), torch.nn.Linear(16, 16), f(),
                               torch.nn.Linear(16, 1)).double()


def attacked(net: torch.nn.Module, lo: torch.Tensor, hi: torch.Tensor, restarts: int = 8, steps: int = 300) -> float:
    gen = torch.Generator().manual_seed(1)
    best = float("inf")
    for _ in range(restarts):
        x = (lo + (hi - lo) * torch.rand(lo.shape, generator=gen, dtype=lo.dtype)).requires_grad_(True)
        opt = torch.optim.Adam([x], lr=0.05 * float((hi - lo).max()))
        for _ in range(steps):
            opt.zero_grad()
            net(x[None])[0, 0].backward()
            opt.step()
            with torch.no_grad():
                x.copy_(torch.maximum(torch.minimum(x, hi), lo))
        with torch.no_grad():
            best = min(best, float(net(x[None])[0, 0]))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--act", default="tanh", choices=sorted(ACTIVATIONS))
    ap.add_argument("--dims", default="30,60")
    ap.add_argument("--eps", default="0.1,0.3")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--frac", type=float, default=0.7)
    ap.add_argument("--time", type=float, default=10.0)
    ap.add_argument("--modes", default="relu,input", help="branch and bound's modes ('relu': neuron splitting)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    modes = args.modes.split(",")
    totals = {m: 0 for m in modes}
    print(f"{args.act}, threshold {args.frac:.0%} of the way from alpha-CROWN to the attack, {args.time:g} s each")
    for d in (int(v) for v in args.dims.split(",")):
        for eps in (float(v) for v in args.eps.split(",")):
            for seed in range(args.seeds):
                net = network(seed, d, args.act)
                engine = BoundEngine(BoundGraph.from_module(net, (d,)))
                torch.manual_seed(100 + seed)
                x0 = torch.randn(d, dtype=torch.float64)
                lo, hi = x0 - eps, x0 + eps
                C = torch.ones(1, 1, dtype=torch.float64)
                top = attacked(net, lo, hi)
                root = float(engine.bound(lo[None], hi[None], C[None], method="alpha")[0, 0])
                t = root + args.frac * (top - root)
                cells = []
                for mode in modes:
                    began = time.perf_counter()
                    r = bab.verify(engine, lo, hi, C, t, time_limit=args.time, mode=mode, milp_workers=1)
                    seconds = time.perf_counter() - began
                    closed = (r.lower + t - root) / (t - root) if not r.proven else 1.0
                    totals[mode] += r.proven
                    cells.append(f"{mode}: {'proved' if r.proven else f'{closed:.0%} of the gap'} "
                                 f"({r.domains} subdomains, {seconds:.1f} s)")
                print(f"d {d} eps {eps:g} seed {seed}: alpha {root:.4f} attack {top:.4f} | " + " | ".join(cells),
                      flush=True)
    print("proved: " + ", ".join(f"{m} {n}" for m, n in totals.items()))


if __name__ == "__main__":
    main()
