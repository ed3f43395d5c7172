"""Benchmark (issue 12): proofs against exact answers. On the demo MLP (64-32-32-10 ReLU) and the
first correctly classified test digits, L-inf: the exact minimal adversarial distance by MILP
(HiGHS) and the radius each sound method certifies (IBP, CROWN, alpha-CROWN), as a ratio to the
exact one, with seconds per point. A certified radius above the exact one would be a bug: the
benchmark stops on it.

    python -m bench.bounds [--inputs 20] [--model specs/models/digits_mlp.onnx]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bench.common import ROOT, demo_mlp_digits
from bench.exact_radius import mlp_layers
from nnspec.bounds import certified_radius, engine_for, margin_objectives
from nnspec.models.loading import load_model
from nnspec.backends.quant import QuantBackend
from nnspec.solvers.milp import min_distance
from tests.helpers import gap, prop, task

RADIUS = 0.5
METHODS = ("ibp", "crown", "alpha", "bab")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--inputs", type=int, default=20)
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ", ".join(METHODS))
    args = parser.parse_args()
    torch.set_num_threads(2)
    model, xs, ys = demo_mlp_digits(args.inputs)
    xs = xs.double()
    layers = mlp_layers()
    engine = engine_for(model)
    # the MILP's box is bounded by the closest witness a search finds (the minimum cannot be farther)
    net64 = load_model(ROOT / "specs/models/digits_mlp.onnx", dtype=torch.float64)
    found = QuantBackend().run(task(prop(gap(None, reading="logits"), "linf", RADIUS), xs, ys, lower=0.0, upper=1.0,
                                    budget=8000, ibp=False), net64)
    exact, seconds = [], {"milp": 0.0}
    t0 = time.perf_counter()
    for i in range(len(xs)):
        upper = found[i].witness.distance if found[i].witness else RADIUS
        exact.append(min_distance(layers, xs[i].numpy().reshape(-1), int(ys[i]), None, "linf",
                                  max_radius=upper * (1 + 1e-6), time_limit=300).distance)
    seconds["milp"] = (time.perf_counter() - t0) / len(xs)
    exact = np.array(exact)
    print(f"demo MLP, {len(xs)} correctly classified test digits, L-inf; exact radius (MILP) median "
          f"{np.median(exact):.4f}, {seconds['milp']:.2f} s per point\n")
    print("| method | certified / exact: median | min | max | s per point |")
    print("|---|---|---|---|---|")
    for method in args.methods.split(","):
        t0 = time.perf_counter()
        radii = np.array([certified_radius(engine, xs[i], margin_objectives(10, int(ys[i])), 0.0, RADIUS,
                                           torch.zeros(64), torch.ones(64), method=method, time_limit=10.0,
                                           known_upper=found[i].witness.distance if found[i].witness else None)
                           for i in range(len(xs))])
        per_point = (time.perf_counter() - t0) / len(xs)
        ratio = radii / exact
        assert (radii <= exact + 1e-9).all(), f"{method}: a certified radius above the exact distance (a bug)"
        print(f"| {method} | {np.median(ratio):.3f} | {ratio.min():.3f} | {ratio.max():.3f} | {per_point:.3f} |")


if __name__ == "__main__":
    main()
