"""DeepGame's Table 1 setting (issue 5): L0 adversarial distance on MNIST with the paper's own model.

The first N correctly classified MNIST test images; nnspec's `game` backend (tau = 1: a manipulated
pixel goes to 0 or 1) with each of its upper-bound searches (best-first, the default and the paper's
Table 1 algorithm; MCTS with guided playouts; MCTS with the paper's uniform random playouts) against JSMA from the Adversarial Robustness Toolbox
(a peer library, installed with `pip install -e .[bench]`) on the same images, in the same run:
mean and standard deviation of the L0 distance (pixels) of confirmed adversarial examples, success
rate, seconds per image. The paper reports 6.11 +- 2.48 pixels in 4.06 s (DeepGame), 7.07 (C&W),
10.85 (L0-TRE), 33.86 (JSMA).

    python bench/deepgame_l0.py [--images 50] [--budget 4000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import deepgame_mnist  # noqa: E402
from nnspec.backends.base import BoundTask  # noqa: E402
from nnspec.backends.game import GameBackend  # noqa: E402
from nnspec.backends.registry import GAME  # noqa: E402
from nnspec.properties.expressions import ConfidenceGap  # noqa: E402
from tests.helpers import prop  # noqa: E402

RADIUS = 60  # pixels: the ball within which an adversarial example counts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--budget", type=int, default=4000)
    args = ap.parse_args()
    data = deepgame_mnist()
    if data is None:
        return
    model, images, labels = data
    x_all = torch.from_numpy(images[: 4 * args.images])
    pred = model(x_all).argmax(1).numpy()
    keep = np.nonzero(pred == labels[: len(pred)])[0][: args.images]
    x, y = x_all[keep], torch.from_numpy(labels[keep])
    print(f"{len(keep)} correctly classified MNIST test images (indices {keep.tolist()})")

    # --- nnspec: the game backend, one property on all images
    p = prop(ConfidenceGap("untargeted", None, 0.0, "logits"), "l0", RADIUS, kind="max_radius")
    runs = [("best-first (default)", {"upper": "best_first"}),
            ("MCTS, guided playouts", {"upper": "mcts", "guided": True}),
            ("MCTS, uniform playouts (paper)", {"upper": "mcts", "guided": False})]
    for name, extra in runs:
        opts = GAME.defaults() | {"budget": args.budget, "tau": 1.0, "features": 16, "playouts": 32} | extra
        task = BoundTask(p, x, y, torch.zeros(784), torch.ones(784), True, opts)
        t0 = time.perf_counter()
        outs = GameBackend().run(task, model)
        secs = (time.perf_counter() - t0) / len(keep)
        dist, found_at = [], []
        for i, o in enumerate(outs):
            if o.witness is None:
                continue
            w = torch.tensor(o.witness.x, dtype=torch.float32)[None]
            if int(model(w).argmax()) != int(y[i]):  # confirm on the model
                dist.append(int((w[0] != x[i]).sum()))
                found_at.append(min(t["queries"] for t in o.trace if t["upper"] == o.bounds.upper))
        report(f"nnspec game: {name}", dist, len(keep), secs, np.mean([o.queries for o in outs]),
               np.mean(found_at) if found_at else None)

    # --- JSMA from the Adversarial Robustness Toolbox on the same images
    try:
        import art
        from art.attacks.evasion import SaliencyMapMethod
        from art.estimators.classification import PyTorchClassifier
    except ImportError:
        print("| JSMA (ART) | not installed: pip install -e .[bench] |")
        return
    clf = PyTorchClassifier(model=model.module, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 28, 28),
                            nb_classes=10, clip_values=(0.0, 1.0))
    attack = SaliencyMapMethod(clf, theta=1.0, gamma=RADIUS / 784, verbose=False)
    t0 = time.perf_counter()
    adv = attack.generate(x.numpy())
    secs = (time.perf_counter() - t0) / len(keep)
    adv_t = torch.from_numpy(adv)
    ok = model(adv_t).argmax(1) != y
    dist = [int((adv_t[i] != x[i]).sum()) for i in range(len(keep)) if ok[i]]
    report(f"JSMA (ART {art.__version__}, theta=1)", dist, len(keep), secs, None, None)


def report(name, dist, total, secs, queries, found_at) -> None:
    if not hasattr(report, "header"):
        print("| method | success | L0 mean +- std (pixels) | median | s per image | queries per image "
              "| queries until the reported example |")
        print("|---|---|---|---|---|---|---|")
        report.header = True
    d = np.asarray(dist, dtype=float)
    stats = f"{d.mean():.2f} +- {d.std():.2f} | {np.median(d):.0f}" if len(d) else "- | -"
    q = f"{queries:.0f}" if queries is not None else "-"
    f = f"{found_at:.0f}" if found_at is not None else "-"
    print(f"| {name} | {len(d)}/{total} | {stats} | {secs:.2f} | {q} | {f} |")


if __name__ == "__main__":
    main()
