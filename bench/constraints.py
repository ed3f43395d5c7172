"""L1/L2 balls: the paper's augmented Lagrangian (Algorithm 2) against exact projection onto the
ball (issue 4). Same property, inputs, budget and seed; we compare the closest witness, the radius
estimate, the queries used and the time.

    python bench/constraints.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import ROOT  # noqa: E402
from nnspec.backends.quant import QuantBackend  # noqa: E402
from nnspec.models.loading import load_model  # noqa: E402
from tests.helpers import gap, prop, task  # noqa: E402


def main() -> None:
    data = np.load(ROOT / "specs/models/digits_test.npz")
    x = torch.from_numpy(data["x"][:10]).double()
    print("| network | norm, radius | constraint | witnesses found | mean witness distance | mean estimate | mean queries | s per input |")
    print("|---|---|---|---|---|---|---|---|")
    for name in ("digits_mlp", "digits_cnn"):
        model = load_model(ROOT / f"specs/models/{name}.onnx", dtype=torch.float64)
        labels = model(x).argmax(1)
        for norm, radius in (("l2", 1.5), ("l1", 6.0)):
            for constraint in ("project", "auglag"):
                t0 = time.perf_counter()
                outs = QuantBackend().run(task(prop(gap(None), norm, radius), x, labels, lower=0.0, upper=1.0,
                                               budget=4000, constraint=constraint, ibp=False), model)
                secs = (time.perf_counter() - t0) / len(x)
                w = [o.witness.distance for o in outs if o.witness]
                print(f"| {name} | {norm}({radius:g}) | {constraint} | {len(w)}/{len(outs)} | "
                      f"{np.mean(w) if w else float('nan'):.4f} | {np.mean([o.bounds.estimate for o in outs]):.4f} | "
                      f"{np.mean([o.queries for o in outs]):.0f} | {secs:.3f} |")


if __name__ == "__main__":
    main()
