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
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
