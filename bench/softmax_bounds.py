"""Certified radii of properties read through the softmax (issue 12): probability thresholds,
probability gaps with a margin, KL divergences to uniform.

Two settings, every method (IBP, CROWN, alpha-CROWN, branch and bound) on one process:

- ``grid``: random two-input ReLU MLPs (2-12-12-4), a random centre; the exact L-inf radius from a
  301 x 301 grid of the box (bisection on the box's radius, at most 2). Branch and bound gets the
  grid radius as its known upper bound, as a confirmed violation gives it in a run.
- ``demo``: the bundled demo MLP (8x8 digits) on the first test digits; the upper bound is the
  least radius where projected gradient descent on s finds a violation that the float32 model
  confirms (a bisection), given to branch and bound as a run's searches would.

Each certified radius is checked on the network: on the grid by the grid itself, on the demo by
the same descent at the certified radius (no violation found). Reports the median and least ratio
certified / upper per method and property, and seconds per radius:

    python -m bench.softmax_bounds --setting grid --seeds 6
    python -m bench.softmax_bounds --setting demo --inputs 8 --time 10
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nnspec.backends.soundness import proved_lower
from nnspec.models.model import Model
from nnspec.properties import expressions as ex

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("ibp", "crown", "alpha", "bab")
PROPERTIES = {
    "prob(label) >= 0.5": ex.OutputThreshold("prob", None, ">=", 0.5),
    "prob(1) <= 0.3": ex.OutputThreshold("prob", 1, "<=", 0.3),
    "kl > 0.2": ex.KLDivergence(0.2, None),
    "gap 0.3 (untargeted)": ex.ConfidenceGap("untargeted", None, 0.3, "probabilities"),
    "gap 0.2 to label 2": ex.ConfidenceGap("label", 2, 0.2, "probabilities"),
}


def s_values(expr, outputs: torch.Tensor, label: int, centre: torch.Tensor) -> torch.Tensor:
    centres = ex.Centres(torch.tensor([label]), centre[None], None)
    return expr.bind(centres, True)(outputs[None])[0]


def grid_net(seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(2, 12), nn.ReLU(), nn.Linear(12, 12), nn.ReLU(), nn.Linear(12, 4))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return net.eval()


def grid_min(net, expr, x0, r, label, k=301) -> float:
    a = torch.linspace(-r, r, k, dtype=torch.float64)
    X = torch.stack(torch.meshgrid(a, a, indexing="ij"), -1).reshape(-1, 2) + x0
    double = copy.deepcopy(net).double()
    with torch.no_grad():
        return float(s_values(expr, double(X), label, double(x0[None])[0]).min())


def grid_radius(net, expr, x0, label, top=2.0) -> float:
    if grid_min(net, expr, x0, top, label) >= 0:
        return top
    good, bad = 0.0, top
    for _ in range(20):
        mid = (good + bad) / 2
        good, bad = (mid, bad) if grid_min(net, expr, x0, mid, label) >= 0 else (good, mid)
    return bad


def descent_min(model: Model, expr, x0, r, label, centre, restarts=4, steps=100) -> float:
    """The least s that projected gradient descent finds in the box of radius r within [0, 1],
    evaluated on the float32 model."""
    lo, hi = (x0 - r).clamp(0, 1), (x0 + r).clamp(0, 1)
    gen = torch.Generator().manual_seed(0)
    best = float("inf")
    for k in range(restarts):
        x = (x0 if k == 0 else lo + (hi - lo) * torch.rand(x0.shape, generator=gen)).clone().requires_grad_(True)
        for _ in range(steps):
            s = s_values(expr, model.module(x[None]).double(), label, centre)[0]
            (g,) = torch.autograd.grad(s, x)
            with torch.no_grad():
                x -= 0.1 * r * g.sign()
                x.copy_(torch.maximum(torch.minimum(x, hi), lo))
        with torch.no_grad():
            best = min(best, float(s_values(expr, model.module(x[None]).double(), label, centre)[0]))
    return best


def descent_radius(model, expr, x0, label, centre, top=0.5) -> float | None:
    if descent_min(model, expr, x0, top, label, centre) >= 0:
        return None
    good, bad = 0.0, top
    for _ in range(10):
        mid = (good + bad) / 2
        good, bad = (mid, bad) if descent_min(model, expr, x0, mid, label, centre) >= 0 else (good, mid)
    return bad


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setting", default="grid", choices=("grid", "demo"))
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--inputs", type=int, default=8)
    ap.add_argument("--time", type=float, default=5.0, help="branch and bound's seconds per radius")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ratios: dict[tuple[str, str], list[float]] = {}
    seconds: dict[str, list[float]] = {m: [] for m in METHODS}
    cases = []
    if args.setting == "grid":
        for seed in range(args.seeds):
            net = grid_net(seed)
            x0 = torch.rand(2, generator=torch.Generator().manual_seed(100 + seed))
            cases.append((Model(net, (2,), 4), net, x0, (torch.full((2,), -10.0), torch.full((2,), 10.0)), 2.0))
    else:
        from nnspec.models.loading import load_model

        model = load_model(ROOT / "specs/models/digits_mlp.onnx")
        data = np.load(ROOT / "specs/models/digits_test.npz")
        for i in range(args.inputs):
            x0 = torch.tensor(data["x"][i], dtype=torch.float32).reshape(model.input_shape)
            cases.append((model, None, x0, (torch.zeros(model.input_shape), torch.ones(model.input_shape)), 0.5))
    for k, (model, net, x0, (lower, upper), top) in enumerate(cases):
        with torch.no_grad():
            centre = model.module(x0[None].to(model.dtype))[0].double()
        label = int(centre.argmax())
        for name, expr in PROPERTIES.items():
            if isinstance(expr, ex.ConfidenceGap) and expr.target == "label" and expr.target_label == label:
                continue
            if float(s_values(expr, centre[None], label, centre)[0]) < 0:
                continue
            if net is not None:
                bound = grid_radius(net, expr, x0.double(), label, top)
            else:
                bound = descent_radius(model, expr, x0, label, centre, top)
            if bound is None or bound >= top:
                continue  # no violation within the ball: nothing to compare with
            line = []
            for method in METHODS:
                started = time.perf_counter()
                r, _, _ = proved_lower(model, expr, True, x0, label, centre, top, lower, upper, method=method,
                                       time_limit=args.time, known_upper=bound)
                seconds[method].append(time.perf_counter() - started)
                r = r or 0.0
                check = grid_min(net, expr, x0.double(), r, label) if net is not None else \
                    descent_min(model, expr, x0, r, label, centre)
                if r > 0 and check < -1e-9:
                    raise SystemExit(f"UNSOUND: case {k} {name} {method}: radius {r} but s = {check}")
                ratios.setdefault((name, method), []).append(r / bound)
                line.append(f"{method} {r / bound:.3f}")
            print(f"case {k} {name}: upper {bound:.4g}; " + ", ".join(line), flush=True)
    print()
    print("| property | cases | " + " | ".join(f"{m} median (min)" for m in METHODS) + " |")
    print("|---|---|" + "---|" * len(METHODS))
    for name in PROPERTIES:
        rows = [ratios.get((name, m), []) for m in METHODS]
        if not rows[0]:
            continue
        cells = " | ".join(f"{statistics.median(v):.3f} ({min(v):.3f})" for v in rows)
        print(f"| {name} | {len(rows[0])} | {cells} |")
    print("| seconds per radius, median | | " + " | ".join(f"{statistics.median(seconds[m]):.2f}" for m in METHODS) + " |")


if __name__ == "__main__":
    main()
