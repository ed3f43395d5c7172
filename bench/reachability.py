"""Benchmark 3 (issue 4): reachability like DeepQuant's Table 2.

Networks with one output on [0, 10]^n (fixed seeds, He-initialised): ReLU 1x100, 1x200, 1x500,
1x1000 and 6x250 with 2 inputs; tanh 6x250 with 2 to 5 inputs. For each, the min and max of the
output over the box. The reference values come from a dense evaluation (a 2001 x 2001 grid for 2
inputs, 2 million uniform samples otherwise) polished by a long local search: a reference, not a
certificate. nnspec's `reachability range` search runs with doubling budgets until both extremes are
within a relative error of 1e-2 of the reference; we report its queries and seconds for that run.

    python bench/reachability.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from nnspec.backends.quant import QuantBackend  # noqa: E402
from nnspec.models.loading import from_module  # noqa: E402
from nnspec.properties.expressions import OutputValue  # noqa: E402
from nnspec.solvers.mads import MadsOptions, minimize_mads  # noqa: E402
from tests.helpers import prop, task  # noqa: E402

NETS = [("ReLU 1x100", 2, 1, 100, nn.ReLU), ("ReLU 1x200", 2, 1, 200, nn.ReLU), ("ReLU 1x500", 2, 1, 500, nn.ReLU),
        ("ReLU 1x1000", 2, 1, 1000, nn.ReLU), ("ReLU 6x250", 2, 6, 250, nn.ReLU)] + \
       [(f"tanh 6x250, {k} inputs", k, 6, 250, nn.Tanh) for k in (2, 3, 4, 5)]


def build(n_in, depth, width, act, seed=0):
    torch.manual_seed(seed)
    layers, prev = [], n_in
    for _ in range(depth):
        lin = nn.Linear(prev, width)
        nn.init.kaiming_normal_(lin.weight)
        layers += [lin, act()]
        prev = width
    layers.append(nn.Linear(prev, 1))
    return nn.Sequential(*layers).double().eval()


def reference(net, n):
    with torch.inference_mode():
        if n == 2:
            g = torch.linspace(0, 10, 2001, dtype=torch.float64)
            pts = torch.cartesian_prod(g, g)
        else:
            pts = torch.rand(2_000_000, n, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 10
        vals = torch.cat([net(c) for c in pts.split(200_000)]).flatten()
    lo, hi = torch.zeros(n, dtype=torch.float64), torch.full((n,), 10.0, dtype=torch.float64)
    out = []
    for sign, idx in ((1, vals.argmin()), (-1, vals.argmax())):
        f = lambda x: sign * net(x).flatten()  # noqa: E731
        res = minimize_mads(f, pts[idx].clone(), lo, hi, MadsOptions(max_evals=20000, poll="gps", search=4))
        out.append(sign * min(res.fun, float(sign * vals[idx])))
    return out[0], out[1]


def main() -> None:
    print("| network | reference [min, max] | nnspec [min, max] | queries | seconds | reference seconds |")
    print("|---|---|---|---|---|---|")
    for name, n, depth, width, act in NETS:
        net = build(n, depth, width, act)
        t0 = time.perf_counter()
        ref_lo, ref_hi = reference(net, n)
        t_ref = time.perf_counter() - t0
        model = from_module(net, (n,), dtype=torch.float64)
        centre = torch.full((1, n), 5.0, dtype=torch.float64)
        p = prop(OutputValue("logit", 0, 1e-2), "linf", 5.0, kind="range")
        budget, result = 250, None
        while budget <= 64_000:
            t0 = time.perf_counter()
            out = QuantBackend().run(task(p, centre, [0], lower=0.0, upper=10.0, logits=True, budget=budget,
                                          poll="gps", search=8), model)[0]
            secs = time.perf_counter() - t0
            lo, hi = out.value_range
            scale = max(1.0, abs(ref_hi - ref_lo))
            if abs(lo - ref_lo) / scale <= 1e-2 and abs(hi - ref_hi) / scale <= 1e-2:
                result = (lo, hi, out.queries, secs)
                break
            budget *= 2
        if result is None:
            print(f"| {name} | [{ref_lo:.4g}, {ref_hi:.4g}] | [{lo:.4g}, {hi:.4g}] (not within 1e-2 at 64k) | - | - | {t_ref:.1f} |")
        else:
            lo, hi, q, secs = result
            print(f"| {name} | [{ref_lo:.4g}, {ref_hi:.4g}] | [{lo:.4g}, {hi:.4g}] | {q} | {secs:.2f} | {t_ref:.1f} |")


if __name__ == "__main__":
    main()
