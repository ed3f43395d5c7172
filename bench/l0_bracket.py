"""Benchmark (issue 12): DeepGame's pixel game bracketed from both sides.

`maximum safe radius within l0(k)` on the demo MLP's first test digits, through `nnspec check`
(game backend, budget 1,500 as in specs/games.nnspec): the searches' closest witness gives the
upper bound (pixels that flip the digit, each set to the end of the domain, confirmed on the
model), the bound engine over the L0 ball the lower one (pixels that may change to any values in
the domain and flip nothing). A bracket is tight where upper = lower + 1: the least number of
pixels that flip the digit is then known. Per bound method (none, crown, alpha, bab with
``--bab-time`` seconds), the tight brackets, the median gap and the seconds per digit.

    python -m bench.l0_bracket [--inputs 20] [--pixels 8] [--bab-time 10]
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import ROOT
from nnspec.pipeline import CheckOptions, check

SPEC = """model "{model}"
output logits
inputs "{inputs}" key x labels key y first {n}
domain [0, 1]
property pixels: maximum safe radius within l0({k}) using game(budget=1500, seed=0{extra})
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--inputs", type=int, default=20)
    parser.add_argument("--pixels", type=int, default=8)
    parser.add_argument("--bab-time", type=float, default=10.0)
    parser.add_argument("--random", type=int, default=0)
    args = parser.parse_args()
    if args.random:
        return random_nets(args.random)
    models = ROOT / "specs" / "models"
    print(f"demo MLP, first {args.inputs} test digits, maximum safe radius within l0({args.pixels})\n")
    print("| bound | lower bound found | tight brackets (upper = lower + 1) | median upper - lower | "
          "s per digit |")
    print("|---|---|---|---|---|")
    for bound in ("none", "crown", "alpha", "bab"):
        extra = f", bound={bound}" + (f", bound_time={args.bab_time}" if bound == "bab" else "")
        with tempfile.TemporaryDirectory() as tmp:
            spec = Path(tmp) / "l0.nnspec"
            spec.write_text(SPEC.format(model=models / "digits_mlp.onnx", inputs=models / "digits_test.npz",
                                        n=args.inputs, k=args.pixels, extra=extra))
            started = time.perf_counter()
            records = check([spec], CheckOptions(cache=False)).records
            seconds = (time.perf_counter() - started) / len(records)
        pairs = [(r.bounds["lower"], r.bounds["upper"]) for r in records]
        for lower, upper in pairs:  # a proved count at or past a confirmed witness would be a bug
            assert lower is None or upper is None or lower < upper, (bound, lower, upper)
        found = sum(lo is not None for lo, _ in pairs)
        upper_of = [args.pixels + 1 if up is None else up for _, up in pairs]  # no witness: past the ball
        gaps = [up - (0 if lo is None else lo) for (lo, _), up in zip(pairs, upper_of)]
        tight = sum(g == 1 for g in gaps)
        print(f"| {bound} | {found}/{len(pairs)} | {tight}/{len(pairs)} | {statistics.median(gaps):g} | "
              f"{seconds:.2f} |")


def random_nets(count: int, n: int = 17, top: int = 3) -> None:
    import torch

    from nnspec.bounds import certified_radius, engine_for, margin_objectives
    from nnspec.bounds.exact import milp_radius
    from nnspec.models.model import Model
    from tests.helpers import relu_net

    def violated(engine, x, label, k: int) -> bool:  # some k coordinates, anywhere in [0, 1], violate
        for subset in itertools.combinations(range(n), k):
            lo, hi = x.clone(), x.clone()
            lo[list(subset)], hi[list(subset)] = 0.0, 1.0
            result = milp_radius(engine, x, label, None, 1.0, lo, hi, time_limit=30)
            assert result.status in ("optimal", "infeasible"), result
            if math.isfinite(result.distance):
                return True
        return False

    print(f"{count} random {n}-16-16-3 ReLU nets, L0 counts certified up to {top}\n")
    print("| net | crown | alpha | bab (5 s) | s (all three) | bab's count |")
    print("|---|---|---|---|---|---|")
    for seed in range(100, 100 + count):
        net = relu_net((n, 16, 16, 3), seed=seed)
        engine = engine_for(Model(net, (n,), 3, dtype=torch.float64))
        x = torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        label = int(net(x[None]).argmax())
        C, box = margin_objectives(3, label), (torch.zeros(n, dtype=torch.float64), torch.ones(n, dtype=torch.float64))
        started = time.perf_counter()
        got = {m: int(certified_radius(engine, x, C, 0.0, float(top), *box, method=m, norm="l0",
                                       model_eps=2.0**-52, time_limit=5.0)) for m in ("crown", "alpha", "bab")}
        seconds = time.perf_counter() - started
        k = got["bab"]
        assert not (k and violated(engine, x, label, k)), f"net {seed}: {k} coordinates proved, a violation exists"
        what = "the question (capped)" if k == top else "exact" if violated(engine, x, label, k + 1) else "not exact"
        print(f"| {seed} | {got['crown']} | {got['alpha']} | {k} | {seconds:.1f} | {what} |")


if __name__ == "__main__":
    main()
