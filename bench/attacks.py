"""Benchmark (issue 13): does nnspec find every violation the model has? On the demo MLP with exact
L-inf radii r* (nnspec's MILP mode), for the first correctly classified test digits:

- found-rate of `robustness within linf(k * r*)` with default options, k = 1.01, 1.1, 1.5, 3;
- radius quantification: the closest confirmed witness / r* (median, max), seconds per point;
- the same with `attack=mads` (the paper's derivative-free search alone), for comparison;
- the reference, in the same run: foolbox's FMN (L-inf, minimal norm, default 100 steps) for the
  witness / r* columns and its PGD (40 steps, random start) at each k r* for the found-rates
  (skipped with a note when foolbox is not installed: `pip install -e .[bench]`).

    python -m bench.attacks [--inputs 20] [--net cnn] [--milp-time 60] [--bracket-time 120] [--seed 0]

``--net cnn``: the demo CNN (conv, ReLU, max-pool). Its MILP (max-pools as ReLU layers) may not
close in ``--milp-time`` seconds; where it does not, the reference radius r^ is the closest
confirmed violation any method here found (so a violation exists at k r^ for every k >= 1, and
witness / r^ >= 1), and the table says how many radii are exact. ``--bracket-time S``: for those,
a second MILP over the box of radius (1 - 1e-3) r^ (a fixed box is far easier for HiGHS than the
minimum distance): where it proves no violation there, r* is within 0.1% of r^.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import nnspec
from bench.common import demo_mlp_digits
from nnspec.bounds import engine_for
from nnspec.bounds.exact import milp_radius


BRACKET = 1e-3  # relative: r* in [(1 - BRACKET) r^, r^] when the MILP proves no violation below


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--inputs", type=int, default=20)
    parser.add_argument("--net", choices=("mlp", "cnn"), default="mlp")
    parser.add_argument("--milp-time", type=float, default=300.0, help="seconds per point for the exact MILP")
    parser.add_argument("--bracket-time", type=float, default=0.0,
                        help="seconds per point for proving, where the exact MILP did not close, that no "
                             f"violation lies within {1 - BRACKET} of the closest one found")
    parser.add_argument("--seed", type=int, default=0, help="the searches' seed")
    args = parser.parse_args()
    torch.set_num_threads(2)
    model, xs, ys = demo_mlp_digits(args.inputs, args.net)
    xs = xs.reshape((-1,) + tuple(model.input_shape))
    engine = engine_for(model)
    runs = {}
    for attack in ("auto", "mads"):  # radius quantification in the 0.5 ball, timed
        t0, records = time.perf_counter(), []
        for i in range(len(xs)):
            spec = f"robustness on logits within linf(0.5) using mads(attack={attack}, bound=none, seed={args.seed})"
            records.append(nnspec.check_module(model, xs[i:i + 1], spec, labels=ys[i:i + 1], domain=(0.0, 1.0))[0])
        runs[attack] = (records, (time.perf_counter() - t0) / len(xs))
    fmn = _foolbox_fmn(model, xs, ys)
    # the MILP's box is bounded by the closest confirmed witness (the minimum cannot be farther)
    t0 = time.perf_counter()
    exact, closed, within = [], 0, 0
    for i in range(len(xs)):
        uppers = [r[i].bounds["upper"] for r, _ in runs.values() if r[i].bounds["upper"] is not None]
        if fmn is not None and np.isfinite(fmn[0][i]):
            uppers.append(float(fmn[0][i]))
        best = min(uppers + [0.5])
        result = milp_radius(engine, xs[i].double(), int(ys[i]), None, best * (1 + 1e-6), torch.zeros(64),
                             torch.ones(64), time_limit=args.milp_time)
        if result.status != "optimal" and args.bracket_time > 0:
            # no violation within (1 - BRACKET) of the closest one known: r* is within BRACKET of it
            result = milp_radius(engine, xs[i].double(), int(ys[i]), None, best * (1 - BRACKET), torch.zeros(64),
                                 torch.ones(64), time_limit=args.bracket_time)
            within += result.status == "infeasible"
        closed += result.status == "optimal"
        exact.append(result.distance if result.status == "optimal" else best)
    exact = np.array(exact)
    name = "demo MLP" if args.net == "mlp" else "demo CNN"
    print(f"{name}, {len(xs)} correctly classified test digits; exact L-inf radius (MILP, "
          f"{(time.perf_counter() - t0) / len(xs):.1f} s per point) for {closed}/{len(xs)}, the others the "
          f"closest confirmed violation found here; of those, the MILP proved no violation within "
          f"{1 - BRACKET} of it on {within} (r* within {BRACKET:.1%}); median {np.median(exact):.4f}\n")
    print("| search | found at 1.01 r* | 1.1 r* | 1.5 r* | 3 r* | witness / r*: median | max | s per point |")
    print("|---|---|---|---|---|---|---|---|")
    for attack in ("auto", "mads"):
        found = []
        for k in (1.01, 1.1, 1.5, 3.0):
            hits = 0
            for i in range(len(xs)):
                spec = (f"robustness on logits within linf({float(k * exact[i])!r}) using mads(attack={attack}, "
                        f"bound=none, seed={args.seed})")
                r = nnspec.check_module(model, xs[i:i + 1], spec, labels=ys[i:i + 1], domain=(0.0, 1.0))[0]
                hits += r.verdict == "violated"
            found.append(hits)
        records, per_point = runs[attack]
        ratios = [(r.bounds["upper"] or np.inf) / exact[i] for i, r in enumerate(records)]
        n = len(xs)
        print(f"| {attack} | " + " | ".join(f"{h}/{n}" for h in found) +
              f" | {np.median(ratios):.4f} | {np.max(ratios):.4f} | {per_point:.2f} |")
    reference = _foolbox(model, xs, ys, exact, fmn)
    if reference is None:
        print("\n(foolbox is not installed: no reference rows; `pip install -e .[bench]`)")
    else:
        for line in reference:
            print(line)


def _foolbox_fmn(model, xs, ys):
    """foolbox's FMN (minimal L-inf norm) on all points in one batch: (distances, inf where it
    failed; seconds per point), or None without foolbox."""
    try:
        import foolbox as fb
    except ImportError:
        return None
    fmodel = fb.PyTorchModel(model.module.eval(), bounds=(0.0, 1.0))
    t0 = time.perf_counter()
    _, adv, success = fb.attacks.LInfFMNAttack()(fmodel, xs, ys, epsilons=None)
    seconds = (time.perf_counter() - t0) / len(xs)
    with torch.no_grad():  # confirmed on the model, like nnspec's witnesses
        wrong = model.module(adv).argmax(1) != ys
    dist = (adv - xs).abs().flatten(1).amax(1).double().numpy()
    return np.where(success.numpy() & wrong.numpy(), dist, np.inf), seconds


def _foolbox(model, xs, ys, exact, fmn) -> list[str] | None:
    """foolbox's FMN (minimal L-inf norm) and PGD (fixed eps) on the same points, as table rows."""
    if fmn is None:
        return None
    import foolbox as fb

    fmodel = fb.PyTorchModel(model.module.eval(), bounds=(0.0, 1.0))
    n = len(xs)
    dist, fmn_seconds = fmn
    ratios = dist / exact
    fmn_found = [int((dist <= k * exact).sum()) for k in (1.01, 1.1, 1.5, 3.0)]
    t0 = time.perf_counter()
    pgd_found = np.zeros(4, dtype=int)
    for i in range(n):
        eps = [float(k * exact[i]) for k in (1.01, 1.1, 1.5, 3.0)]
        _, _, hit = fb.attacks.LinfPGD()(fmodel, xs[i:i + 1], ys[i:i + 1], epsilons=eps)
        pgd_found += hit[:, 0].numpy().astype(int)
    pgd_seconds = (time.perf_counter() - t0) / (4 * n)
    return ["| foolbox FMN | " + " | ".join(f"{h}/{n}" for h in fmn_found) +
            f" | {np.median(ratios):.4f} | {np.max(ratios):.4f} | {fmn_seconds:.2f} |",
            "| foolbox PGD | " + " | ".join(f"{h}/{n}" for h in pgd_found) + f" | - | - | {pgd_seconds:.2f} |"]


if __name__ == "__main__":
    main()
