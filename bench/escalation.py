"""Benchmark (issue 12): what the default bound proves where CROWN falls just short of the ball.

`bound=auto` (the default) certifies with CROWN and, where the searches found no violation and
CROWN's radius is short of the ball's by at most ``soundness.ESCALATE_WITHIN``, gives branch and
bound ``bound_time`` seconds (10) to prove the whole ball. One `mads` check per digit and ball
(search budget 800, as in the demo specs), L-inf, with `bound=crown` and with `bound=auto`:

- the demo MLP: balls of f x the exact radius (MILP), f = 0.8, 0.9, 0.97 (they hold: the right
  answer is proven) and 1.05 (a violation exists: the right answer is violated);
- the demo CNN (no exact radius: its MILP does not finish): f x the closest violation that a
  search with 8,000 queries finds, f = 0.6, 0.7, 0.8 (the truth is not known; a proof is sound).

Prints the verdicts of each setting and the seconds per check. ``--random K``: instead, a
soundness sweep on K random ReLU nets of each shape 4-16-16-3 (input splitting) and 20-16-16-3
(ReLU splitting), one input each in [0, 1], exact L-inf radius by MILP: balls of 0.95 x (hold)
and 1.02 x (hold a violation); it stops on a ball proven past the exact radius.

    python -m bench.escalation [--inputs 20] [--net mlp|cnn|both] [--random K]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import torch

from bench.common import ROOT, demo_mlp_digits
from bench.exact_radius import mlp_layers
from nnspec.backends.quant import QuantBackend
from nnspec.models.loading import load_model
from nnspec.solvers.milp import min_distance
from tests.helpers import gap, prop, relu_case, task

BUDGET = 800
FRACTIONS = {"mlp": (0.8, 0.9, 0.97, 1.05), "cnn": (0.6, 0.7, 0.8)}


def references(net: str, model, xs, ys) -> list[float]:
    """Per digit: the exact L-inf radius (MLP, MILP) or the closest violation found (CNN)."""
    model64 = load_model(ROOT / f"specs/models/digits_{net}.onnx", dtype=torch.float64)
    found = QuantBackend().run(task(prop(gap(None), "linf", 0.5), xs.double(), ys, lower=0.0, upper=1.0,
                                    budget=8000, bound="none"), model64)
    upper = [f.witness.distance if f.witness else 0.5 for f in found]
    if net == "cnn":
        return upper
    layers = mlp_layers()
    return [min_distance(layers, xs[i].double().numpy(), int(ys[i]), None, "linf", max_radius=upper[i] * (1 + 1e-6),
                         time_limit=300).distance for i in range(len(xs))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--inputs", type=int, default=20)
    parser.add_argument("--net", default="both", choices=("mlp", "cnn", "both"))
    parser.add_argument("--random", type=int, default=0, help="a soundness sweep on this many random nets per shape")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.random:
        return sweep(args.random)
    for net in ("mlp", "cnn") if args.net == "both" else (args.net,):
        model, xs, ys = demo_mlp_digits(args.inputs, net)
        xs = xs.reshape((-1,) + tuple(model.input_shape))
        t0 = time.perf_counter()
        ref = references(net, model, xs, ys)
        what = "exact radius (MILP)" if net == "mlp" else "closest violation found"
        print(f"\ndemo {net.upper()}, {len(xs)} digits, L-inf; {what}: {time.perf_counter() - t0:.0f} s for all\n")
        print("| ball | bound | proven | no violation found | violated | s per check |")
        print("|---|---|---|---|---|---|")
        for f in FRACTIONS[net]:
            for method in ("crown", "auto"):
                verdicts: Counter = Counter()
                t0 = time.perf_counter()
                for i in range(len(xs)):
                    (out,) = QuantBackend().run(task(prop(gap(None), "linf", f * ref[i]), xs[i:i + 1], ys[i:i + 1],
                                                     lower=0.0, upper=1.0, budget=BUDGET, bound=method, seed=1),
                                                model)
                    verdicts[out.verdict.value] += 1
                    if net == "mlp" and out.verdict.value == "proven":
                        assert f < 1, f"proven past the exact radius on digit {i} (a bug)"
                per = (time.perf_counter() - t0) / len(xs)
                print(f"| {f} x | {method} | {verdicts['proven']} | {verdicts['no_violation_found']} | "
                      f"{verdicts['violated']} | {per:.2f} |")


def sweep(count: int) -> None:
    from nnspec.models.loading import from_module
    from nnspec.solvers.milp import layers_of

    for sizes in ((4, 16, 16, 3), (20, 16, 16, 3)):
        tally: Counter = Counter()
        seconds: Counter = Counter()
        for seed in range(count):
            net, x = relu_case(seed, 1, sizes)
            label = int(net(x).argmax())
            exact = min_distance(layers_of(net), x[0].numpy(), label, None, "linf", max_radius=1.0).distance
            if exact >= 1.0:  # no violation in the domain's reach: nothing to compare against
                continue
            model = from_module(net, (sizes[0],), name="net", dtype=torch.float64)
            for f in (0.95, 1.02):
                for method in ("crown", "auto"):
                    t0 = time.perf_counter()
                    (out,) = QuantBackend().run(task(prop(gap(None), "linf", f * exact), x, [label], lower=0.0,
                                                     upper=1.0, budget=BUDGET, bound=method, seed=1), model)
                    seconds[(f, method)] += time.perf_counter() - t0
                    tally[(f, method, out.verdict.value)] += 1
                    assert not (f > 1 and out.verdict.value == "proven"), f"seed {seed}: proven past the exact radius"
        n = sum(v for (f, m, _), v in tally.items() if f == 0.95 and m == "crown")
        print(f"\n{'-'.join(map(str, sizes))}, {n} nets with an exact radius below 1\n")
        print("| ball | bound | proven | no violation found | violated | s per check |")
        print("|---|---|---|---|---|---|")
        for f in (0.95, 1.02):
            for method in ("crown", "auto"):
                print(f"| {f} x exact | {method} | {tally[(f, method, 'proven')]} | "
                      f"{tally[(f, method, 'no_violation_found')]} | {tally[(f, method, 'violated')]} | "
                      f"{seconds[(f, method)] / max(n, 1):.2f} |")


if __name__ == "__main__":
    main()
