"""Benchmark 2 (issue 4): nnspec against exact minimal adversarial distances (MILP), and against
random sampling at the same query count (the paper's RS baseline).

On the demo MLP (64-32-32-10 ReLU) and the first correctly classified test digits, L-inf: the exact
minimal distance by MILP (HiGHS), nnspec's witness distance (an upper bound) and radius estimate at
several budgets, and the closest violation that uniform sampling in the same ball finds with the
same number of queries.

    python bench/exact_radius.py [--inputs 10]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import ROOT  # noqa: E402
from nnspec.backends.quant import QuantBackend  # noqa: E402
from nnspec.bounds import certified_radius, engine_for, margin_objectives  # noqa: E402
from nnspec.models.loading import load_model  # noqa: E402
from nnspec.solvers.milp import min_distance  # noqa: E402
from tests.helpers import gap, prop, task  # noqa: E402

RADIUS = 0.5


def mlp_layers():
    """The demo MLP's weights, read from its ONNX file (Gemm nodes, transB=1)."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(ROOT / "specs/models/digits_mlp.onnx"))
    init = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in proto.graph.initializer}
    layers = []
    for node in proto.graph.node:
        if node.op_type == "Gemm":
            w, b = init[node.input[1]], init[node.input[2]]
            trans = next((a.i for a in node.attribute if a.name == "transB"), 0)
            layers.append((w if trans else w.T, b))
    return layers


def random_sampling(model, x, label, queries, seed):
    gen = torch.Generator().manual_seed(seed)
    best = math.inf
    for start in range(0, queries, 4096):
        k = min(4096, queries - start)
        delta = (torch.rand((k,) + x.shape, generator=gen, dtype=torch.float64) * 2 - 1) * RADIUS
        # random radii too, so that close violations can be found
        delta = delta * torch.rand((k,) + (1,) * x.dim(), generator=gen, dtype=torch.float64)
        y = (x + delta).clamp(0, 1)
        out = model(y)
        others = out.clone()
        others[:, label] = -math.inf
        viol = out[:, label] - others.max(1).values < 0
        if viol.any():
            d = (y - x).reshape(k, -1).abs().amax(1)[viol]
            best = min(best, float(d.min()))
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--inputs", type=int, default=10)
    args = ap.parse_args()
    torch.manual_seed(0)
    data = np.load(ROOT / "specs/models/digits_test.npz")
    net = load_model(ROOT / "specs/models/digits_mlp.onnx", dtype=torch.float64)
    layers = mlp_layers()
    xs, ys = torch.from_numpy(data["x"]).double(), torch.from_numpy(data["y"])
    keep = (net(xs).argmax(1) == ys).nonzero().flatten()[: args.inputs]
    xs, ys = xs[keep], ys[keep]
    runs = {}
    for budget in (500, 2000, 8000):
        t0 = time.perf_counter()
        outs = QuantBackend().run(task(prop(gap(None, reading="logits"), "linf", RADIUS), xs, ys, lower=0.0, upper=1.0,
                                       budget=budget, ibp=False), net)  # MADS alone; IBP is measured apart
        runs[budget] = (outs, (time.perf_counter() - t0) / len(xs))
    # the MILP's box is bounded by the closest witness found (the minimum cannot be farther)
    exact = []
    t0 = time.perf_counter()
    for i in range(len(xs)):
        upper = min([RADIUS] + [o[i].witness.distance for o, _ in runs.values() if o[i].witness])
        exact.append(min_distance(layers, xs[i].numpy().reshape(-1), int(ys[i]), None, "linf",
                                  max_radius=upper * (1 + 1e-6), time_limit=300).distance)
    t_milp = (time.perf_counter() - t0) / len(xs)
    exact = np.array(exact)
    t0 = time.perf_counter()
    engine = engine_for(net)
    ibp = np.array([certified_radius(engine, xs[i], margin_objectives(10, int(ys[i])), 0.0, RADIUS, torch.zeros(64),
                                     torch.ones(64), method="ibp") for i in range(len(xs))])
    t_ibp = (time.perf_counter() - t0) / len(xs)
    assert (ibp <= exact + 1e-9).all(), "a proved lower bound above the exact distance: a bug"
    print(f"interval bound propagation (proved lower bound; bench/bounds.py compares CROWN and alpha-CROWN): "
          f"lower / exact mean {np.mean(ibp / exact):.3f}, "
          f"min {np.min(ibp / exact):.3f}, max {np.max(ibp / exact):.3f}; {t_ibp:.3f} s per input")
    print(f"{len(xs)} correctly classified test digits; MILP exact L-inf distance: mean {exact.mean():.4f}, "
          f"{t_milp:.2f} s per input")
    print("| budget per input | nnspec witness / exact (mean, max) | within 5% | estimate / exact (mean) | RS witness / exact (mean) | RS found | nnspec s per input |")
    print("|---|---|---|---|---|---|---|")
    for budget, (outs, secs) in runs.items():
        w = np.array([o.witness.distance if o.witness else math.inf for o in outs])
        est = np.array([o.bounds.estimate for o in outs])
        q = [o.queries for o in outs]
        rs = np.array([random_sampling(net, xs[i], int(ys[i]), q[i], seed=i) for i in range(len(xs))])
        ok = np.isfinite(w)
        rs_ok = np.isfinite(rs)
        assert (w[ok] >= exact[ok] - 1e-6).all(), "a witness closer than the exact distance: a bug"
        print(f"| {budget} | {np.mean(w[ok] / exact[ok]):.3f}, {np.max(w[ok] / exact[ok]):.3f} ({ok.sum()}/{len(xs)} found) | "
              f"{np.mean(w / exact <= 1.05):.0%} | {np.mean(est / exact):.3f} | "
              f"{np.mean(rs[rs_ok] / exact[rs_ok]) if rs_ok.any() else float('nan'):.3f} | {rs_ok.sum()}/{len(xs)} | {secs:.2f} |")

if __name__ == "__main__":
    main()
