"""Benchmark 1 (issue 4): tightness against analytic truth.

For linear networks f(y) = W y + b and a targeted logit gap, the Lipschitzian metric is the dual
norm of w = W[l] - W[t] and the exact safe radius is s(x) / Q. We report the queries the `mads`
backend needs until its radius estimate is within 1% of the exact radius, and its final Q^ / Q,
for L-inf, L2 and L1 balls and two input dimensions.

    python bench/tightness.py
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from nnspec.backends.quant import QuantBackend  # noqa: E402
from tests.helpers import gap, linear_model, prop, task  # noqa: E402

DUAL = {"linf": 1, "l2": 2, "l1": math.inf}


def run(n: int, norm: str, seed: int, budget: int) -> dict:
    model, lin = linear_model(n=n, m=3, seed=seed)
    x = torch.zeros(1, n, dtype=torch.float64)
    label = int(model(x).argmax())
    target = (label + 1) % 3
    w = (lin.weight[label] - lin.weight[target]).detach()
    s0 = float(w @ x[0] + (lin.bias[label] - lin.bias[target]).detach())
    q = float(torch.linalg.vector_norm(w, ord=DUAL[norm]))
    exact = s0 / q
    start = time.perf_counter()
    out = QuantBackend().run(task(prop(gap(target), norm, 3 * exact), x, [label], budget=budget, seed=seed,
                                    ibp=False), model)[0]  # MADS alone: IBP is exact on linear models
    seconds = time.perf_counter() - start
    hit = next((t["queries"] for t in out.trace if t["estimate"] is not None
                and abs(t["estimate"] - exact) <= 0.01 * exact), None)
    return {"hit": hit, "q_ratio": out.lipschitz / q, "est_ratio": out.bounds.estimate / exact,
            "upper_ratio": (out.bounds.upper or math.inf) / exact, "seconds": seconds}


def main() -> None:
    print("| n | norm | queries to 1% (median of 5 seeds) | reached in | final Q^/Q | estimate/exact | witness/exact | s per run |")
    print("|---|---|---|---|---|---|---|---|")
    for n in (10, 100):
        for norm in ("linf", "l2", "l1"):
            rows = [run(n, norm, seed, budget=200 * n) for seed in range(5)]
            hits = sorted(r["hit"] for r in rows if r["hit"] is not None)
            med = hits[len(hits) // 2] if hits else None
            mean = lambda k: sum(r[k] for r in rows) / len(rows)  # noqa: E731
            print(f"| {n} | {norm} | {med if med is not None else '-'} | {len(hits)}/5 | {mean('q_ratio'):.4f} | "
                  f"{mean('est_ratio'):.4f} | {mean('upper_ratio'):.4f} | {mean('seconds'):.2f} |")


if __name__ == "__main__":
    main()
