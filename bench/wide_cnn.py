"""Benchmark (issue 12): CROWN on a CNN past the default scale, the DeepGame MNIST model.

Its first two layers have 21,632 and 18,432 neurons (32 x 26 x 26, 32 x 24 x 24), past the 4,096
up to which CROWN is the default, so `auto` gives IBP. Two parts, on 2 CPU cores:

1. One CROWN pass (every op's bounds) on the first test image at a few radii, with the
   convolutions' neurons in patches (``nnspec.bounds.patches``) and without (the dense pass): the
   seconds, and the largest difference between the two passes' bounds (rounding only).
2. `nnspec check` with `robustness within linf(0.1) using mads(budget=..., bound=ibp|auto|crown)` on
   the first N test images: the certified radius (lower bound) and the closest confirmed
   violation (upper bound) per image, the seconds per image.

    python -m bench.wide_cnn [--images 5] [--budget 2000] [--no-dense] [--bounds ibp,auto,crown]

``auto`` (the default) gives CROWN ``bound_time`` seconds from IBP's radius on this network.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import data_root, deepgame_mnist
from nnspec.bounds import engine_for
from nnspec.pipeline import CheckOptions, check

SPEC = """model "{model}"
output logits
inputs "{inputs}" key x labels key y
domain [0, 1]
property robust: robustness within linf(0.1) using mads(budget={budget}, seed=0, bound={bound})
"""


def passes(model, image: torch.Tensor, dense: bool) -> None:
    engine = engine_for(model)
    x = image.double()[None]
    print("| radius | patches: s | dense: s | largest difference |")
    print("|---|---|---|---|")
    for eps in (0.001, 0.003, 0.01, 0.03):
        lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
        started = time.perf_counter()
        fast = engine.intervals(lo, hi, "crown")
        fast_s = time.perf_counter() - started
        if not dense:
            print(f"| {eps} | {fast_s:.2f} | - | - |")
            continue
        engine.use_patches = False
        try:
            started = time.perf_counter()
            slow = engine.intervals(lo, hi, "crown")
            slow_s = time.perf_counter() - started
        finally:
            engine.use_patches = True
        worst = max(float((a - b).abs().max()) for k in slow for a, b in zip(fast[k], slow[k]))
        print(f"| {eps} | {fast_s:.2f} | {slow_s:.2f} | {worst:.1e} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--budget", type=int, default=2000)
    parser.add_argument("--no-dense", action="store_true", help="skip the dense passes (minutes)")
    parser.add_argument("--bounds", default="ibp,auto,crown", help="the bound= options to compare")
    parser.add_argument("--bound-time", type=float, default=None, help="--bound-time for every check")
    args = parser.parse_args()
    data = deepgame_mnist()
    if data is None:
        return
    model, images, labels = data
    print(f"DeepGame MNIST CNN, {torch.get_num_threads()} threads\n")
    passes(model, torch.from_numpy(images[0]), not args.no_dense)
    print(f"\n`robustness within linf(0.1)`, first {args.images} test images, mads budget {args.budget}\n")
    print("| bound | certified radius: median | min | max | closest violation: median | certified / closest "
          "(median) | s per image |")
    print("|---|---|---|---|---|---|---|")
    root = data_root()
    notes = []
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "mnist.npz"
        np.savez(inputs, x=images[: args.images], y=labels[: args.images])
        for bound in args.bounds.split(","):
            spec = Path(tmp) / f"{bound}.nnspec"
            spec.write_text(SPEC.format(model=root / "models/deepgame_mnist.onnx", inputs=inputs,
                                        budget=args.budget, bound=bound))
            started = time.perf_counter()
            records = check([spec], CheckOptions(cache=False, bound_time=args.bound_time)).records
            seconds = (time.perf_counter() - started) / len(records)
            lower = [r.bounds["lower"] or 0.0 for r in records]
            upper = [r.bounds["upper"] for r in records if r.bounds["upper"] is not None]
            ratio = [r.bounds["lower"] / r.bounds["upper"] for r in records
                     if r.bounds["upper"] and r.bounds["lower"] is not None]
            print(f"| {bound} | {statistics.median(lower):.2e} | {min(lower):.2e} | {max(lower):.2e} | "
                  f"{statistics.median(upper) if upper else float('nan'):.3g} | "
                  f"{statistics.median(ratio) if ratio else float('nan'):.3f} | {seconds:.1f} |")
            notes.append(f"{bound}: {records[0].notes[-1] if records[0].notes else ''}")
    print("\nThe first image's last note per bound:\n")
    for note in notes:
        print(f"- {note}")


if __name__ == "__main__":
    main()
