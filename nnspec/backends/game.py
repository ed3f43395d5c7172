"""DeepGame backend: maximum safe radius (cooperative game) and feature robustness (competitive).

Per centre, on the tau-grid of the ball: MCTS gives violations (upper bounds, confirmed later like
every witness), admissible A* brackets the grid game's value, alpha-beta runs the competitive game
over the features of a partition. What each number means is kept apart:

* ``upper``: the distance of the closest violation found: a true upper bound of the safe radius.
* ``lower``: s(x) / L with L a *sound* Lipschitz constant of the margin (from the layers, or given
  by the user, who then vouches for it): a true lower bound on the continuous ball.
* the grid game's bounds from A* are reported separately (notes, trace): they bound the tau-grid
  game, and the true radius only under DeepGame's Theorem 1, which nnspec does not check.

Trees are searched one centre at a time; each expansion and each step of all playouts is one
batched model call.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from nnspec.backends.base import BoundTask
from nnspec.backends.registry import GAME
from nnspec.errors import SpecError
from nnspec.models.model import Model, label_score
from nnspec.properties.expressions import Centres
from nnspec.results.records import Outcome, RadiusBounds, Verdict, Witness
from nnspec.solvers.games import features as partitions
from nnspec.solvers.games.alphabeta import alpha_beta
from nnspec.solvers.games.astar import admissible_astar
from nnspec.solvers.games.game import GridGame
from nnspec.solvers.games.lipschitz import layers_of_module, layers_of_onnx, margin_from_layers
from nnspec.solvers.games.mcts import mcts


class GameBackend:
    info = GAME

    def run(self, task: BoundTask, model: Model) -> list[Outcome]:
        return [self._one(task, model, i) for i in range(task.centres.shape[0])]

    # ------------------------------------------------------------------ one centre

    def _one(self, task: BoundTask, model: Model, i: int) -> Outcome:
        started, q0 = time.perf_counter(), model.queries
        prop, opts = task.prop, task.options
        shape = tuple(task.centres.shape[1:])
        x0 = task.centres[i].reshape(-1).to(torch.float64).numpy()
        label = int(task.labels[i])
        centre_out = model(task.centres[i:i + 1].to(model.dtype))[0].to(torch.float64)
        expr = prop.expression
        s_fn = expr.bind(Centres(task.labels[i:i + 1], centre_out[None]), task.outputs_are_logits)

        def evaluate(points: np.ndarray) -> np.ndarray:
            out = model(torch.from_numpy(points).to(model.dtype).reshape((len(points),) + shape))
            return s_fn(out.to(torch.float64)[None])[0].numpy()

        norm, radius = prop.region.norm, prop.region.radius
        tau = opts.get("tau") or (1.0 if norm == "l0" else radius / 8)
        lo, hi = task.lower.to(torch.float64).numpy(), task.upper.to(torch.float64).numpy()
        s0 = float(s_fn(centre_out[None, None])[0, 0])
        lip, lip_note = self._lipschitz(model, expr, label, norm, opts)
        self._lip_source = "given in the spec, not verified" if opts.get("lipschitz") else "sound, from the layers"
        notes = [lip_note, f"tau-grid game with tau = {tau:g}"]
        budget = int(opts["budget"]) - 2  # per input, all bounds together (the centre costs one)
        both = opts["upper"] == "mcts" and opts["lower"] == "astar" and lip is not None and norm != "l0"
        share = budget // 2 if both else budget
        trace: list[dict] = []

        def make_game(dims: np.ndarray | None, feats) -> GridGame:
            if dims is None:
                return GridGame(x0, lo, hi, tau, norm, radius, feats, evaluate)

            def sub(points):
                full = np.repeat(x0[None], len(points), axis=0)
                full[:, dims] = points
                return evaluate(full)
            return GridGame(x0[dims], lo[dims], hi[dims], tau, norm, radius,
                            tuple(np.array([k]) for k in range(len(dims))), sub)

        if prop.kind == "feature_robustness":
            return self._feature_robustness(task, model, i, make_game, shape, x0, label, s0, lip, budget, notes,
                                            centre_out, started, q0, opts)

        if opts.get("partition") == "saliency":
            before = model.queries
            feats = tuple(self._partition(prop, "saliency", {"_0": opts["features"]}, shape, x0, model, label))
            spent = model.queries - before  # the ranking is paid from the same budget
            budget -= spent
            share = max(share - spent, 1) if both else budget
        else:
            feats = self._features(shape, opts["features"])
        game = make_game(None, feats)
        upper, witness = math.inf, None
        if opts["upper"] == "mcts":
            res = mcts(game, max_queries=share, playouts=opts["playouts"], seed=opts["seed"])
            upper, witness = res.upper, res.witness
            trace += [{"queries": q, "upper": _f(u), "lower": None} for q, u in res.trace]
        grid = None
        if opts["lower"] == "astar" and lip is not None and norm != "l0":
            grid = admissible_astar(game, lip, max_queries=budget - (share if both else 0),
                                    max_frontier=opts["max_frontier"])
            if grid.upper < upper:
                upper, witness = grid.upper, grid.witness
            offset = trace[-1]["queries"] if trace else 0
            trace += [{"queries": offset + q, "lower": _f(lo_), "upper": _f(min(up, upper))} for q, lo_, up in grid.trace]
            notes.append(f"grid game value in [{grid.lower:.4g}, {min(grid.upper, upper):.4g}] "
                         f"(A* {grid.stop}, {grid.expanded} nodes expanded, frontier peak {grid.frontier_peak}); "
                         "a bound of the true radius only under DeepGame's Theorem 1, not checked")
        elif opts["lower"] == "astar" and norm == "l0":
            notes.append("no A* lower bound in l0: a Lipschitz constant bounds no l0 distance")
        lower = None if lip is None or s0 < 0 else min(s0 / lip, radius)
        return self._outcome(s0, lower, lip, upper, witness, shape, centre_out, model, q0, started, notes, trace)

    def _feature_robustness(self, task, model, i, make_game, shape, x0, label, s0, lip, budget, notes,
                            centre_out, started, q0, opts) -> Outcome:
        name, args = task.prop.partition
        before = model.queries
        feats = self._partition(task.prop, name, dict(args), shape, x0, model, label)
        budget -= model.queries - before  # a saliency ranking is paid from the same budget
        radius, norm = task.prop.region.radius, task.prop.region.norm
        searches = 2 * max(len(feats), 1)  # an upper and a lower search per feature
        if budget < 2 * searches:
            raise SpecError.at(task.prop.span, f"budget too small for {len(feats)} features: give "
                                               f"using game(budget=...) at least {model.queries - before + 2 + 2 * searches}")
        per_budget = budget // searches
        witnesses: dict[int, np.ndarray] = {}

        def quick_upper(f: int) -> float:
            res = mcts(make_game(feats[f], None), max_queries=per_budget, playouts=opts["playouts"], seed=opts["seed"])
            if res.witness is not None:
                full = x0.copy()
                full[feats[f]] = res.witness
                witnesses[f] = full
            return min(res.upper, radius)

        def bounds(f: int, cutoff: float) -> tuple[float, float]:
            if lip is None or norm == "l0" or opts["lower"] != "astar":
                return -math.inf, quick_upper(f) if f not in witnesses else radius
            res = admissible_astar(make_game(feats[f], None), lip, max_queries=per_budget, max_frontier=opts["max_frontier"])
            if res.witness is not None:
                full = x0.copy()
                full[feats[f]] = res.witness
                witnesses.setdefault(f, full)
            return min(res.lower, radius), min(res.upper, radius)

        fr = alpha_beta(len(feats), quick_upper, bounds)
        notes.append(f"{len(feats)} features ({name}); feature robustness of the grid game in "
                     f"[{fr.lower:.4g}, {fr.upper:.4g}]; pruned features: {list(fr.pruned)}")
        notes.append("per feature (lower, upper): " + ", ".join(f"{k}: ({lo:.3g}, {hi:.3g})" for k, (lo, hi)
                                                                 in enumerate(fr.per_feature)))
        # the closest witness of any feature is a violation in the ball: an upper bound of the radius
        best = min(witnesses.items(), key=lambda kv: float(np.linalg.norm(kv[1] - x0, ord=_ord(norm))), default=None)
        upper = math.inf if best is None else float(np.linalg.norm(best[1] - x0, ord=_ord(norm)))
        lower = None if lip is None or s0 < 0 else min(s0 / lip, radius)
        return self._outcome(s0, lower, lip, upper, None if best is None else best[1], shape, centre_out, model, q0,
                             started, notes, [])

    # ------------------------------------------------------------------ helpers

    def _outcome(self, s0, lower, lip, upper, witness, shape, centre_out, model, q0, started, notes, trace) -> Outcome:
        w = None
        if witness is not None and math.isfinite(upper):
            w = Witness(x=np.asarray(witness).reshape(shape).tolist(), distance=upper, s=math.nan, output=[], confirmed=False)
        bounds = RadiusBounds(estimate=None, upper=_f(upper), lower=lower,
                              lower_method=None if lower is None else f"s(x)/L, L = {lip:.4g} ({self._lip_source})")
        return Outcome(Verdict.VIOLATED if w else Verdict.QUANTIFIED, s_centre=s0, bounds=bounds, witness=w,
                       queries=model.queries - q0, seconds=time.perf_counter() - started, stop="budget",
                       centre_output=centre_out.tolist(), lipschitz=lip, trace=trace, notes=tuple(notes))

    def _lipschitz(self, model: Model, expr, label: int, norm: str, opts) -> tuple[float | None, str]:
        if opts.get("lipschitz"):
            return float(opts["lipschitz"]), f"Lipschitz constant {opts['lipschitz']:g} given in the spec (vouched for by its author)"
        if norm == "l0":
            return None, "no Lipschitz lower bound in l0"
        target = expr.target_label if expr.target == "label" else None
        if expr.target == "least_likely":
            target = None
        try:
            if model.source and model.source.endswith(".onnx"):
                weights, factor = layers_of_onnx(model.source)
            else:
                weights, factor = layers_of_module(model.module)
            if model._scale is not None:  # normalisation scales the input
                factor *= float(np.max(np.abs(np.asarray(model._scale, dtype=np.float64))))
            lip = margin_from_layers(weights, factor, label, target, norm)
            return lip, f"sound Lipschitz constant {lip:.4g} of the margin from the layers' operator norms"
        except ValueError as err:
            return None, f"no sound Lipschitz constant ({err}); no lower bound (give lipschitz=... to vouch for one)"

    def _features(self, shape: tuple[int, ...], count: int) -> tuple[np.ndarray, ...]:
        n = int(np.prod(shape))
        if len(shape) >= 2 and shape[-1] * shape[-2] >= count:
            side = max(1, int(round(math.sqrt(count))))
            return tuple(partitions.grid(shape if len(shape) == 3 else (1,) + shape[-2:], side, side))
        return tuple(np.array_split(np.arange(n), min(count, n)))

    def _partition(self, prop, name, args, shape, x0, model, label):
        try:
            return partitions.by_name(name, args, shape, x0, label_score(model, shape, label))
        except ValueError as err:  # a partition that does not fit these inputs: the spec's fault
            raise SpecError.at(prop.span, str(err)) from None


def _f(v: float) -> float | None:
    return v if v is not None and math.isfinite(v) else None


def _ord(norm: str):
    return {"l0": 0, "l1": 1, "l2": 2, "linf": np.inf}[norm]
