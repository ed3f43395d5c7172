"""DeepGame's Fig. 9 setting (issue 5): anytime convergence of the bounds for one MNIST image
(index 67), L2, the paper's model. Prints the upper bound (best-first search's violations) and the
grid game's lower bound (admissible A*) against queries, twice: with the sound Lipschitz constant of
the conv net from its layers (then the sound lower bounds, s(x)/L and Theorem 1's), and with an
estimated one (then only estimates, labelled so).

    python bench/deepgame_convergence.py [--budget 20000] [--radius 3.0]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import deepgame_mnist  # noqa: E402
from nnspec.backends.base import BoundTask  # noqa: E402
from nnspec.backends.game import GameBackend  # noqa: E402
from nnspec.backends.registry import GAME  # noqa: E402
from nnspec.properties.expressions import ConfidenceGap  # noqa: E402
from tests.helpers import prop  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=int, default=20000)
    ap.add_argument("--radius", type=float, default=3.0)
    ap.add_argument("--index", type=int, default=67)
    args = ap.parse_args()
    data = deepgame_mnist()
    if data is None:
        return
    model, images, _ = data
    x = torch.from_numpy(images[args.index:args.index + 1])
    label = model(x).argmax(1)
    p = prop(ConfidenceGap("untargeted", None, 0.0, "logits"), "l2", args.radius, kind="max_radius")
    for source in ("layers", "estimate"):
        opts = GAME.defaults() | {"budget": args.budget, "tau": args.radius / 8, "features": 16,
                                  "lipschitz_source": source}
        t0 = time.perf_counter()
        (out,) = GameBackend().run(BoundTask(p, x, label, torch.zeros(784), torch.ones(784), True, opts), model)
        secs = time.perf_counter() - t0
        print(f"\n### Lipschitz constant: {source}\n")
        print(f"MNIST test image {args.index}, label {int(label)}, L2 ball {args.radius}, tau {opts['tau']:g}, "
              f"{out.queries} queries in {secs:.1f} s")
        print(f"bounds: {out.bounds}")
        for note in out.notes:
            print(f"note: {note}")
        print("\n| queries | upper (closest violation) | grid-game lower (A*) |")
        print("|---|---|---|")
        trace = out.trace
        marks = sorted({int(len(trace) * f) for f in (0, 0.1, 0.25, 0.5, 0.75)} | {len(trace) - 1})
        for i in marks:
            t = trace[i]
            fmt = lambda v: "-" if v is None else f"{v:.4g}"  # noqa: E731
            grid = fmt(t.get("lower")) if t.get("lower") is not None else (
                "~" + fmt(t.get("estimate")) if t.get("estimate") is not None else "-")  # ~: under an estimated L
            print(f"| {t['queries']} | {fmt(t.get('upper'))} | {grid} |")

if __name__ == "__main__":
    main()
