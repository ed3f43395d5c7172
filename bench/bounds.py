"""Benchmark (issue 12): proofs against exact answers. On the demo MLP (64-32-32-10 ReLU) and the
first correctly classified test digits, L-inf: the exact minimal adversarial distance by MILP
(HiGHS) and the radius each sound method certifies (IBP, CROWN, alpha-CROWN, hull: alpha-CROWN
with the single-neuron hull's facets, branch and bound), as a ratio to the exact one, with
seconds per point. A certified radius above the exact one would be a bug: the benchmark stops
on it.

The reference row ``lp (convex barrier)``: the radius that the triangle LP relaxation certifies
when every intermediate bound is itself an LP optimum over the relaxation of the layers before it
(HiGHS; bisection to 2^-12 of r*). No method that relaxes each ReLU separately (IBP, CROWN,
alpha-CROWN with any slopes, DeepPoly, the LP itself) can certify more (Salman et al. 2019, "A
convex relaxation barrier to tight robustness verification"); past it only branching (BaB, MILP)
or relaxations of several inputs at once (hull) help.

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
METHODS = ("ibp", "crown", "alpha", "hull", "bab")


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
    t0 = time.perf_counter()
    radii = np.array([lp_barrier_radius(layers, xs[i].numpy().reshape(-1), int(ys[i]), exact[i]) for i in range(len(xs))])
    ratio = radii / exact
    assert (radii <= exact + 1e-9).all(), "lp: a certified radius above the exact distance (a bug)"
    print(f"| lp (convex barrier, reference) | {np.median(ratio):.3f} | {ratio.min():.3f} | {ratio.max():.3f} | "
          f"{(time.perf_counter() - t0) / len(xs):.3f} |")


def lp_barrier_radius(layers, x0: np.ndarray, label: int, high: float, steps: int = 12) -> float:
    """The largest radius in [0, high] that the layer-wise tightened triangle LP proves."""
    good, bad = 0.0, high
    for _ in range(steps):
        mid = (good + bad) / 2
        if _lp_margin(layers, x0, label, mid) > 0:
            good = mid
        else:
            bad = mid
    return good


def _lp_margin(layers, x0: np.ndarray, label: int, r: float) -> float:
    """min over targets of the LP lower bound of y_label - y_t on the L-inf box of radius r."""
    from scipy.optimize import linprog

    lo, hi = np.clip(x0 - r, 0, 1), np.clip(x0 + r, 0, 1)
    sizes = [len(x0)] + [w.shape[0] for w, _ in layers[:-1]]
    offs = np.cumsum([0] + sizes)
    nv = int(offs[-1])
    pre: list[tuple[np.ndarray, np.ndarray]] = []

    def minimise(k: int, c_pre: np.ndarray) -> float:
        """min of c_pre @ (W_k a_{k-1} + b_k) over the relaxation of layers < k."""
        w, b = layers[k]
        c = np.zeros(nv)
        c[offs[k]:offs[k + 1]] = c_pre @ w
        rows, rhs = [], []
        box = [(lo[i], hi[i]) for i in range(len(x0))]
        for j in range(1, k + 1):
            wj, bj = layers[j - 1]
            zl, zu = pre[j - 1]
            for q in range(wj.shape[0]):
                if zu[q] <= 0:
                    box.append((0, 0))
                    continue
                box.append((0, None))
                row = np.zeros(nv)
                row[offs[j - 1]:offs[j]], row[offs[j] + q] = wj[q], -1  # a >= z
                rows.append(row), rhs.append(-bj[q])
                slope = 1.0 if zl[q] >= 0 else zu[q] / (zu[q] - zl[q])  # a <= z (stable) or the chord
                row = np.zeros(nv)
                row[offs[j - 1]:offs[j]], row[offs[j] + q] = -slope * wj[q], 1
                rows.append(row), rhs.append(slope * (bj[q] - min(zl[q], 0.0)))
        box += [(0, 0)] * (nv - len(box))
        res = linprog(c, A_ub=np.array(rows) if rows else None, b_ub=np.array(rhs) if rows else None, bounds=box,
                      method="highs")
        return float(res.fun + c_pre @ b)

    for k, (w, b) in enumerate(layers[:-1]):
        if k == 0:  # exact by intervals
            wp, wn = np.clip(w, 0, None), np.clip(w, None, 0)
            pre.append((wp @ lo + wn @ hi + b, wp @ hi + wn @ lo + b))
            continue
        eye = np.eye(w.shape[0])
        pre.append((np.array([minimise(k, e) for e in eye]), np.array([-minimise(k, -e) for e in eye])))
    m = layers[-1][0].shape[0]
    return min(minimise(len(layers) - 1, np.eye(m)[label] - np.eye(m)[t]) for t in range(m) if t != label)


if __name__ == "__main__":
    main()
