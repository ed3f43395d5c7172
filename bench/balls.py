"""Benchmark (issue 12): proofs over L1 and L2 balls. On the demo MLP (or CNN) and its first
correctly classified test digits, the radius each method certifies for an L1 or L2 ball, beside
the closest violation the searches find in that norm (an upper bound of the exact radius) and, for
L1 on the MLP, the exact radius by MILP (HiGHS, the box bounded by that violation). "box" is the
proof over the ball's bounding box (what nnspec did before: the ball lies in it); "ball" minimises
over the ball cut to the domain (``nnspec.bounds.balls``). A certified radius above the upper
bound would be a bug: the benchmark stops on it.

    python -m bench.balls [--inputs 10] [--net mlp|cnn] [--norms l1,l2] [--bab-time 10] [--milp-time 120]
                          [--methods "crown (box),bab (ball)"]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bench.common import ROOT, demo_mlp_digits
from nnspec.backends.quant import QuantBackend
from nnspec.bounds import certified_radius, engine_for, margin_objectives
from nnspec.bounds.exact import milp_radius
from nnspec.models.loading import load_model
from tests.helpers import gap, prop, task

RADIUS = {"l1": 4.0, "l2": 2.0}
ROWS = (("ibp", "ibp", None), ("crown (box)", "crown", None), ("crown (ball)", "crown", "ball"),
        ("alpha (ball)", "alpha", "ball"), ("bab (box)", "bab", None), ("bab (ball)", "bab", "ball"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--inputs", type=int, default=10)
    parser.add_argument("--net", default="mlp", choices=("mlp", "cnn"))
    parser.add_argument("--norms", default="l1,l2")
    parser.add_argument("--bab-time", type=float, default=10.0)
    parser.add_argument("--milp-time", type=float, default=120.0, help="0: no exact L1 radii")
    parser.add_argument("--methods", default=",".join(name for name, _, _ in ROWS),
                        help="comma-separated rows to run, of: " + ", ".join(name for name, _, _ in ROWS))
    args = parser.parse_args()
    torch.set_num_threads(2)
    model, xs, ys = demo_mlp_digits(args.inputs, args.net)
    xs = xs.double()
    engine = engine_for(model)
    net64 = load_model(ROOT / f"specs/models/digits_{args.net}.onnx", dtype=torch.float64)
    n = xs.shape[1]
    lower, upper = torch.zeros(n), torch.ones(n)
    for norm in args.norms.split(","):
        t0 = time.perf_counter()
        found = QuantBackend().run(task(prop(gap(None, reading="logits"), norm, RADIUS[norm]), xs, ys, lower=0.0,
                                        upper=1.0, budget=8000, ibp=False), net64)
        ups = np.array([f.witness.distance if f.witness else RADIUS[norm] for f in found])
        print(f"\n### demo {args.net.upper()}, {len(xs)} digits, {norm.upper()}: closest violation found "
              f"(median {np.median(ups):.4f}, {time.perf_counter() - t0:.1f} s for all)\n")
        exact = None
        if norm == "l1" and args.net == "mlp" and args.milp_time > 0:
            t0 = time.perf_counter()
            results = [milp_radius(engine, xs[i], int(ys[i]), None, float(ups[i]) * (1 + 1e-6), lower, upper,
                                   time_limit=args.milp_time, norm="l1") for i in range(len(xs))]
            exact = np.array([r.distance if r.status == "optimal" else np.nan for r in results])
            print(f"exact L1 radius by MILP: {int(np.isfinite(exact).sum())} of {len(xs)} solved within "
                  f"{args.milp_time:g} s (median of those {np.nanmedian(exact):.4f}; "
                  f"{(time.perf_counter() - t0) / len(xs):.1f} s per point)\n")
        head = "| method | certified / closest violation: median | min | max |"
        head += " certified / exact (MILP): median | min |" if exact is not None else ""
        print(head + " s per point |")
        print("|---" * (head.count("|") - 1 + 1) + "|")
        for name, method, over in ROWS:
            if name not in args.methods.split(","):
                continue
            t0 = time.perf_counter()
            radii = np.array([certified_radius(engine, xs[i], margin_objectives(10, int(ys[i])), 0.0, RADIUS[norm],
                                               lower, upper, method=method, norm=norm if over else None,
                                               time_limit=args.bab_time, known_upper=float(ups[i]))
                              for i in range(len(xs))])
            per_point = (time.perf_counter() - t0) / len(xs)
            assert (radii <= ups + 1e-9).all(), f"{name}: a certified radius above a found violation (a bug)"
            ratio = radii / ups
            line = f"| {name} | {np.median(ratio):.3f} | {ratio.min():.3f} | {ratio.max():.3f} |"
            if exact is not None:
                solved = np.isfinite(exact)
                assert (radii[solved] <= exact[solved] + 1e-9).all(), f"{name}: above the exact L1 radius (a bug)"
                to_exact = radii[solved] / exact[solved]
                line += f" {np.median(to_exact):.3f} | {to_exact.min():.3f} |" if solved.any() else " - | - |"
            print(line + f" {per_point:.3f} |")


if __name__ == "__main__":
    main()
