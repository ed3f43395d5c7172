"""DeepGame backend: maximum safe radius (cooperative game) and feature robustness (competitive).

Per centre, on the tau-grid of the ball: best-first search (the paper's inadmissible A*) or MCTS
give violations (upper bounds, confirmed later like every witness), admissible A* brackets the grid
game's value, alpha-beta runs the competitive game over the features of a partition. What each
number means is kept apart, and where the Lipschitz constant L comes from is named with it:

* ``upper``: the distance of the closest violation found: a true upper bound of the safe radius.
* ``lower`` (sound L only: from the layers, or given by the user, who vouches for it): the larger of
  s(x)/L and DeepGame's Theorem 1 bound. For Theorem 1, A* searches the grid with the margin shifted
  down by L * beta, beta = 1/2 ||tau 1||_p the half-diagonal of a grid cell; its lower bound r' then
  says every grid input closer than r' has s >= L * beta (the theorem's condition, checked where it
  is needed), so every input closer than r' - beta is safe: each lies within beta of such a grid
  input. Where s(x0) < L * beta the condition fails at the centre itself and the note says so.
* with an *estimated* L (``lipschitz_source=estimate``) the same numbers are only estimates: they go
  to ``estimate``, labelled "conditional on the estimated L", never to ``lower``.
* the grid game's own bounds (A*) are in the notes and the trace: the paper's Fig. 9 curves.

Best-first and A* searches of all centres run in lockstep (generators, ``solvers/games/drive.py``):
each round is one model call for every centre. MCTS and feature robustness run one centre at a
time; each of their expansions, and each step of all playouts, is one batched model call.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from nnspec.backends.base import BoundTask
from nnspec.backends.registry import GAME
from nnspec.backends.soundness import ESCALATE_WITHIN, bound_method, past_crown_scale, proved_lower
from nnspec.bounds import METHODS
from nnspec.errors import SpecError
from nnspec.models.model import Model, label_score
from nnspec.properties.expressions import Centres, ConfidenceGap
from nnspec.results.records import Outcome, RadiusBounds, Verdict, Witness
from nnspec.solvers.games import features as partitions
from nnspec.solvers.games.alphabeta import alpha_beta
from nnspec.solvers.games.astar import admissible_astar, astar_search
from nnspec.solvers.games.bestfirst import best_first_search
from nnspec.solvers.games.drive import drive, drive_together
from nnspec.solvers.games.game import GridGame
from nnspec.solvers.games.lipschitz import (cell_radius, estimate_lipschitz, layers_of_module, layers_of_onnx,
                                            margin_from_layers)
from nnspec.solvers import gradient
from nnspec.solvers.games.mcts import mcts
from nnspec.solvers.projection import box_in_ball

GRADIENT_GAME_SHARE = 0.3  # of the upper bound's budget, for the gradient stage
GRADIENT_RESTARTS = 4
GRADIENT_SLACK = 1e-5  # a violation needs s below this, as in the mads backend

_SOURCE = {"given": "given in the spec, not verified", "sound": "sound, from the layers",
           "estimate": "conditional on the estimated L"}


class GameBackend:
    info = GAME

    def run(self, task: BoundTask, model: Model) -> list[Outcome]:
        if task.prop.kind == "feature_robustness":
            return [self._feature_robustness(task, model, self._prepare(task, model, i))
                    for i in range(task.centres.shape[0])]
        states = [self._prepare(task, model, i) for i in range(task.centres.shape[0])]
        self._upper_all(task, model, states)
        self._lower_all(task, model, states)
        return [self._finish(task, model, st) for st in states]

    # ------------------------------------------------------------------ phases of maximum safe radius

    def _prepare(self, task: BoundTask, model: Model, i: int) -> "_State":
        """One centre's game: s at the centre, L, the features, the budget left."""
        started, q0 = time.perf_counter(), model.queries
        prop, opts = task.prop, task.options
        shape = tuple(task.centres.shape[1:])
        x0 = task.centres[i].reshape(-1).to(torch.float64).numpy()
        label = int(task.labels[i])
        centre_out = model(task.centres[i:i + 1].to(model.dtype))[0].to(torch.float64)
        s_fn = prop.expression.bind(Centres(task.labels[i:i + 1], centre_out[None]), task.outputs_are_logits)
        norm, radius = prop.region.norm, prop.region.radius
        tau = opts.get("tau") or (1.0 if norm == "l0" else radius / 8)
        lo, hi = task.lower.to(torch.float64).numpy(), task.upper.to(torch.float64).numpy()
        s0 = float(s_fn(centre_out[None, None])[0, 0])
        ctx = _Centre(x0, lo, hi, tau, norm, radius, s0, shape, _evaluator(model, shape, s_fn), s_fn)
        before = model.queries
        lip = self._lipschitz(model, prop.expression, label, ctx, opts, task.outputs_are_logits)
        budget = int(opts["budget"]) - 1 - (model.queries - before)  # per input, everything together
        notes = [lip.note, f"tau-grid game with tau = {tau:g}"]
        feats = None
        if prop.kind != "feature_robustness":
            if opts.get("partition", "grid") != "grid":  # saliency, superpixels or sift: features for Player I
                before = model.queries
                feats = tuple(self._partition(prop, opts["partition"], {"_0": opts["features"]}, shape, x0, model,
                                              label))
                budget -= model.queries - before  # a saliency ranking is paid from the same budget
            else:
                feats = self._features(shape, opts["features"])
        wants_lower = opts["lower"] == "astar" and lip.value is not None and norm != "l0"
        share = budget // 2 if wants_lower and opts["upper"] != "none" else budget
        st = _State(ctx, label, centre_out, lip, feats, budget, share, wants_lower, notes)
        st.ibp = self._ibp(task, model, st)  # before the searches: it also tells them when to stop
        st.queries, st.seconds = model.queries - q0, time.perf_counter() - started
        return st

    def _ibp(self, task: BoundTask, model: Model, st: "_State") -> float | None:
        ctx = st.ctx
        method = bound_method(task.options)
        if method == "none" or ctx.s0 < 0:
            return None
        r, note, st.ibp_method = self._proved_lower(task, model, st, method)
        st.notes.append(note)
        st.ibp_note = len(st.notes) - 1
        return r

    def _escalate(self, task: BoundTask, model: Model, st: "_State") -> None:
        """``bound=auto`` after the searches, as in the mads backend: where they found no violation
        and CROWN's radius (proved before them) falls short of the ball's by at most
        ESCALATE_WITHIN, branch and bound gets ``bound_time`` seconds to prove the whole ball (for
        maximum safe radius and feature robustness alike: no feature's perturbation leaves it)."""
        ctx = st.ctx
        if st.witness is not None or st.ibp is None or st.ibp_method != METHODS["crown"] or \
                bound_method(task.options) != "auto" or not ctx.radius / ESCALATE_WITHIN <= st.ibp < ctx.radius \
                or past_crown_scale(model):  # (there the default's CROWN had bound_time already, before)
            return
        started = time.perf_counter()
        r, note, method = self._proved_lower(task, model, st, "auto", escalate=True)
        st.seconds += time.perf_counter() - started
        st.notes[st.ibp_note] = note  # CROWN's note, with what branch and bound did
        if method == METHODS["bab"]:
            st.ibp, st.ibp_method = r, method

    @staticmethod
    def _proved_lower(task: BoundTask, model: Model, st: "_State", method: str, escalate: bool = False):
        """``soundness.proved_lower`` on this centre's ball (CROWN again where it escalates: the
        proof before the searches could not know whether they would find a violation)."""
        ctx = st.ctx
        return proved_lower(model, task.prop.expression, task.outputs_are_logits, torch.from_numpy(ctx.x0), st.label,
                            st.centre_out, ctx.radius, torch.from_numpy(ctx.lower), torch.from_numpy(ctx.upper),
                            method=method, time_limit=float(task.options.get("bound_time", 10.0)), norm=ctx.norm,
                            escalate=escalate)

    def _floor(self, st: "_State", game: GridGame) -> float:
        """A lower bound of the grid game's value known before searching: no violation is closer
        than one move, nor than a proved (or vouched-for) lower bound of the continuous radius,
        since grid inputs are inputs too. Searches stop once their upper bound is within epsilon."""
        if st.ctx.s0 < 0:
            return 0.0
        _, dims, signs = game.move_arrays(np.zeros(game.n, dtype=np.int64))
        one = float(game.child_distances(game.x0, 0.0, dims, signs).min()) if len(dims) else math.inf
        known = [one]
        if st.lip.value is not None and st.lip.kind in ("sound", "given"):
            known.append(st.ctx.s0 / st.lip.value)
        if st.ibp is not None:
            known.append(st.ibp)
        return max(known)

    def _upper_all(self, task: BoundTask, model: Model, states: list["_State"]) -> None:
        """The upper-bound searches of all centres. Best-first searches run in lockstep, every round
        one model call for all centres (tensor parallelism across inputs); MCTS one centre at a time."""
        opts = task.options
        if opts["upper"] == "none":
            return
        if opts.get("attack", "none") == "gradient" and task.prop.region.norm != "l0":
            for st in states:
                self._gradient_upper(model, st, opts)
        started, q0 = time.perf_counter(), model.queries
        games = [st.ctx.game(None, st.feats) for st in states]
        floors = [self._floor(st, g) for st, g in zip(states, games)]
        if opts["upper"] == "best_first":  # in lockstep the wall time is every centre's: P times the limit
            limit = len(states) * _time_share(opts, states[0])
            results = drive_together([self._best_first(g, st.share, opts, limit, floor)
                                      for g, st, floor in zip(games, states, floors)],
                                     _evaluate_many(model, [st.ctx for st in states]))
        else:
            results = [self._upper(g, st.share, opts, _time_share(opts, st), floor)
                       for g, st, floor in zip(games, states, floors)]
        share = (time.perf_counter() - started) / len(states)  # the joint time, shared out
        assert model.queries - q0 == sum(r.queries for r in results)  # every query is some centre's
        for st, res in zip(states, results):
            if res.upper < st.upper:  # the grid search found a closer violation than the gradient stage
                st.upper, st.witness = res.upper, res.witness
            st.trace += [{"queries": st.queries + q, "seconds": st.seconds + sec, "upper": _f(u), "lower": None}
                         for q, u, sec in res.trace]
            st.history = [(st.queries + q, x) for q, x in res.history]
            st.notes.append(f"{opts['upper']}: {res.iterations} expansions, {res.queries} queries, stopped: {res.stop}")
            st.stops.append(f"upper: {res.stop}")
            st.queries += res.queries
            st.seconds += share

    def _gradient_upper(self, model: Model, st: "_State", opts) -> None:
        """Continuous violations first, where s has a usable gradient: the gradient stage of the
        mads backend (projected gradient with restarts, then minimal-norm walks) on a share of the
        upper bound's budget. Its closest violation is a true upper bound of the safe radius, as the
        grid searches' are; they then search below it."""
        ctx = st.ctx
        if ctx.s0 < 0 or st.share < 8 * GRADIENT_RESTARTS:
            return
        dtype = model.dtype
        x0 = torch.from_numpy(ctx.x0).to(dtype)[None]
        best = {"d": math.inf, "x": None}
        norm = ctx.norm
        q0 = model.queries

        def value_and_grad(idx, y):
            y = y.detach().requires_grad_(True)
            k = y.shape[1]
            out = model.forward_grad(y.reshape((k,) + ctx.shape))
            s_val = ctx.s_fn(out[None].to(torch.float64))
            grad, = torch.autograd.grad(s_val.sum(), y)
            with torch.no_grad():
                s_val = s_val.detach()
                d = gradient.distance_of(y.detach() - x0[:, None, :], norm)
                ok = (s_val < -GRADIENT_SLACK) & (d <= ctx.radius * (1 + 1e-9))
                if bool(ok.any()):
                    j = int(torch.where(ok, d, torch.full_like(d, math.inf)).argmin())
                    if float(d.view(-1)[j]) < best["d"]:
                        best["d"], best["x"] = float(d.view(-1)[j]), y.detach().reshape(k, -1)[j].double().numpy()
            return s_val, torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)

        idx = torch.zeros(1, dtype=torch.long)
        _, g = value_and_grad(idx, x0[:, None, :])
        if not bool(g.abs().sum() > 0):
            st.notes.append("gradient stage skipped: the gradient of s is zero at the centre (black box)")
            return
        share = int(st.share * GRADIENT_GAME_SHARE)
        steps = gradient.GradientOptions().steps
        restarts = int(min(max(GRADIENT_RESTARTS, share // (2 * steps)), 64))
        # corners inside the ball as ``value_and_grad`` measures distances (in the model's dtype)
        lo, hi = box_in_ball(x0, torch.tensor(ctx.radius, dtype=dtype), torch.from_numpy(ctx.lower).to(dtype)[None],
                             torch.from_numpy(ctx.upper).to(dtype)[None])
        radius = torch.full((1,), float(ctx.radius), dtype=torch.float64)
        y, s_val = gradient.search(value_and_grad, idx, x0, radius, lo, hi, norm,
                                   gradient.GradientOptions(steps=steps, restarts=restarts, seed=int(opts["seed"])),
                                   every=True)
        if best["x"] is not None:
            _, _, starts = gradient.closest_starts(y, s_val, gradient.distance_of(y - x0[:, None, :], norm),
                                                   GRADIENT_SLACK, 4)
            dom_lo = torch.from_numpy(ctx.lower).to(dtype)[None]
            dom_hi = torch.from_numpy(ctx.upper).to(dtype)[None]
            left = share - (model.queries - q0)
            if left > 4 * 30:
                gradient.minimal_norm(value_and_grad, idx, x0, dom_lo, dom_hi, norm, starts, min(left // 4, 400),
                                      slack=GRADIENT_SLACK)
        used = model.queries - q0
        st.share -= used
        st.queries += used
        if best["x"] is not None:
            st.upper, st.witness = best["d"], best["x"]
            st.history.append((st.queries, best["x"]))
            st.notes.append(f"gradient stage: a violation at {best['d']:.4g} ({used} queries)")
        else:
            st.notes.append(f"gradient stage: no violation in {used} queries")

    def _lower_all(self, task: BoundTask, model: Model, states: list["_State"]) -> None:
        """A* (Theorem 1) for every centre that has a Lipschitz constant, all in lockstep: one model
        call per round for every centre's children."""
        opts = task.options
        todo = [st for st in states if st.wants_lower]
        if not todo:
            return
        started, q0 = time.perf_counter(), model.queries
        plans = []
        for st in todo:
            seconds = opts["time"] * (1 - st.share / max(st.budget, 1)) if st.trace else opts["time"]
            plans.append(self._theorem1_plan(st.ctx, st.feats, st.lip.value, st.budget - (st.share if st.trace else 0),
                                             opts, len(todo) * seconds, st.upper))
        results = drive_together([plan[0] for plan in plans],
                                 _evaluate_many(model, [st.ctx for st in todo], [plan[1] for plan in plans]))
        share = (time.perf_counter() - started) / len(todo)
        assert model.queries - q0 == sum(r.queries for r in results)  # every query is some centre's
        for st, plan, res in zip(todo, plans, results):
            theorem, grid_trace, grid_note = self._theorem1_result(st.ctx, st.lip.value, plan, res)
            st.theorem = theorem
            st.stops.append(f"lower: {theorem.stop}")
            if theorem.upper < st.upper:  # unshifted A* found a real violation
                st.upper, st.witness = theorem.upper, theorem.witness
                st.history.append((None, theorem.witness))
            key = "estimate" if st.lip.kind == "estimate" else "lower"  # A* under an estimated L proves nothing
            st.trace += [{"queries": st.queries + q, "seconds": st.seconds + sec, key: _f(lo_),
                          "upper": _f(min(up, st.upper))} for q, lo_, up, sec in grid_trace]
            st.notes += [n + (" (all of it conditional on the estimated L)" if st.lip.kind == "estimate" else "")
                         for n in grid_note]
            st.queries += res.queries
            st.seconds += share

    def _finish(self, task: BoundTask, model: Model, st: "_State") -> Outcome:
        """The sound lower bounds and the outcome."""
        if not st.wants_lower and task.options["lower"] == "astar" and st.ctx.norm == "l0":
            st.notes.append("no A* lower bound in l0: a Lipschitz constant bounds no l0 distance")
        self._escalate(task, model, st)
        return self._outcome(st, self._lowers(st.ctx, st.lip, st.theorem, st.ibp, st.ibp_method))

    def _best_first(self, game: GridGame, budget: int, opts, seconds: float = 0.0, floor: float = 0.0):
        moves = len(game.move_arrays(np.zeros(game.n, dtype=np.int64))[1])
        cand = opts.get("candidates")
        cand = max(128, moves // 8) if cand is None else cand
        return best_first_search(game, max_queries=budget, weight=opts["weight"], candidates=cand, seed=opts["seed"],
                                 max_seconds=seconds, floor=floor, epsilon=opts["epsilon"])

    def _upper(self, game: GridGame, budget: int, opts, seconds: float = 0.0, floor: float = 0.0):
        if opts["upper"] == "mcts":
            return mcts(game, max_queries=budget, playouts=opts["playouts"], seed=opts["seed"], guided=opts["guided"],
                        max_seconds=seconds, floor=floor, epsilon=opts["epsilon"])
        return drive(self._best_first(game, budget, opts, seconds, floor), game.evaluate)

    def _lowers(self, ctx, lip, theorem, ibp, ibp_method=None) -> list[tuple[float, str, str]]:
        """Every lower bound of the radius that applies, as (value, method, kind): kind "proved"
        (a sound method), "vouched" (a Lipschitz constant given in the spec) or "estimate"."""
        out = []
        if lip.value is not None and ctx.s0 >= 0:
            value, how = ctx.s0 / lip.value, "s(x)/L"
            if theorem is not None and theorem.lower_continuous is not None and theorem.lower_continuous > value:
                value, how = theorem.lower_continuous, "Theorem 1: A* on the tau-grid with s - L*beta, minus beta"
            kind = {"sound": "proved", "given": "vouched", "estimate": "estimate"}[lip.kind]
            out.append((min(value, ctx.radius), f"{how}, L = {lip.value:.4g} ({_SOURCE[lip.kind]})", kind))
        if ibp is not None:
            out.append((min(ibp, ctx.radius), ibp_method, "proved"))
        return out

    def _theorem1_plan(self, ctx: "_Centre", feats, lip: float, budget: int, opts, seconds: float = 0.0,
                       known_upper: float = math.inf):
        """(A* search, shift of s, beta): A* on the grid with the margin shifted by L * beta
        (Theorem 1, condition enforced), or, where the condition fails at the centre, A* on the plain
        grid game (shift 0: its bounds only). A real violation is a shifted one too, so the closest
        found seeds both."""
        beta = cell_radius(ctx.norm, ctx.tau, ctx.x0.size)
        shift = lip * beta if lip * beta < ctx.s0 else 0.0
        search = astar_search(ctx.game(None, feats, shift=shift), lip, max_queries=budget,
                              max_frontier=opts["max_frontier"], max_seconds=seconds, epsilon=opts["epsilon"],
                              known_upper=known_upper)
        return search, shift, beta

    def _theorem1_result(self, ctx: "_Centre", lip: float, plan, res) -> tuple["_Grid", list, list[str]]:
        _, shift, beta = plan
        if shift:
            cont = max(res.lower - beta, 0.0)
            notes = [f"Theorem 1: grid cell half-diagonal beta = {beta:.4g}; A* with s - L*beta ({shift:.4g}) "
                     f"shows s >= L*beta on every grid input closer than {res.lower:.4g}, so the radius is at "
                     f"least {res.lower:.4g} - beta = {cont:.4g} (A* {res.stop}, {res.expanded} nodes, "
                     f"frontier peak {res.frontier_peak}); the grid game's value is at least {res.lower:.4g}"]
            # the shifted game's violations are not the model's: keep only the lower bounds
            return (_Grid(res.lower, math.inf, None, cont, res.stop), [(q, lo, math.inf, s) for q, lo, _, s in res.trace],
                    notes)
        need = 2 * ctx.s0 / (lip * beta / ctx.tau)
        notes = [f"Theorem 1's condition fails at the centre: s(x0) = {ctx.s0:.4g} < L*beta = {lip * beta:.4g} "
                 f"(beta = {beta:.4g}); it needs tau < {need:.3g}. Grid game value in [{res.lower:.4g}, "
                 f"{res.upper:.4g}] (A* {res.stop}, {res.expanded} nodes, frontier peak {res.frontier_peak}): "
                 "a bound of the grid game only"]
        return _Grid(res.lower, res.upper if res.witness is not None else math.inf, res.witness, None, res.stop), \
            res.trace, notes

    def _feature_robustness(self, task: BoundTask, model: Model, st: "_State") -> Outcome:
        started, q0 = time.perf_counter(), model.queries
        opts, ctx, lip = task.options, st.ctx, st.lip
        name, args = task.prop.partition
        feats = self._partition(task.prop, name, dict(args), ctx.shape, ctx.x0, model, st.label)
        budget = st.budget - (model.queries - q0)  # a saliency ranking is paid from the same budget
        radius, norm, x0 = ctx.radius, ctx.norm, ctx.x0
        searches = 2 * max(len(feats), 1)  # an upper and a lower search per feature
        if budget < 2 * searches:
            raise SpecError.at(task.prop.span, f"budget too small for {len(feats)} features: give "
                                               f"using game(budget=...) at least {opts['budget'] - budget + 2 * searches}")
        per_budget = budget // searches
        witnesses: dict[int, np.ndarray] = {}

        def keep(f: int, w: np.ndarray | None) -> None:
            if w is not None:
                full = x0.copy()
                full[feats[f]] = w
                witnesses.setdefault(f, full)

        def quick_upper(f: int) -> float:
            res = self._upper(ctx.game(feats[f], None), per_budget, opts)
            keep(f, res.witness)
            return min(res.upper, radius)

        def bounds(f: int, cutoff: float) -> tuple[float, float]:
            if lip.value is None or norm == "l0" or opts["lower"] != "astar":
                return -math.inf, quick_upper(f) if f not in witnesses else radius
            res = admissible_astar(ctx.game(feats[f], None), lip.value, max_queries=per_budget,
                                   max_frontier=opts["max_frontier"])
            keep(f, res.witness)
            return min(res.lower, radius), min(res.upper, radius)

        fr = alpha_beta(len(feats), quick_upper, bounds)
        st.stops.append(f"alpha-beta over {len(feats)} features, {len(fr.pruned)} pruned")
        st.notes.append(f"{len(feats)} features ({name}); feature robustness of the grid game in "
                        f"[{fr.lower:.4g}, {fr.upper:.4g}]; pruned features: {list(fr.pruned)}")
        st.notes.append("per feature (lower, upper): " + ", ".join(f"{k}: ({lo:.3g}, {hi:.3g})" for k, (lo, hi)
                                                                    in enumerate(fr.per_feature)))
        # the closest witness of any feature is a violation in the ball: an upper bound of the radius
        best = min(witnesses.values(), key=lambda w: float(np.linalg.norm(w - x0, ord=_ord(norm))), default=None)
        st.upper = math.inf if best is None else float(np.linalg.norm(best - x0, ord=_ord(norm)))
        st.witness = best
        st.queries += model.queries - q0
        st.seconds += time.perf_counter() - started
        self._escalate(task, model, st)  # the whole ball proved bounds every feature's game from below
        lowers = self._lowers(ctx, lip, None, st.ibp, st.ibp_method)
        return self._outcome(st, lowers)

    # ------------------------------------------------------------------ helpers

    def _outcome(self, st: "_State", lowers) -> Outcome:
        ctx, lip, notes, upper = st.ctx, st.lip, st.notes, st.upper
        w = None
        if st.witness is not None and math.isfinite(upper):
            w = Witness(x=np.asarray(st.witness).reshape(ctx.shape).tolist(), distance=upper, s=math.nan, output=[],
                        confirmed=False, found_at=st.history[-1][0] if st.history else None)
        sound = [lo for lo in lowers if lo[2] != "estimate"]
        best = max(sound, key=lambda lo: lo[0], default=None)
        guess = max((lo for lo in lowers if lo[2] == "estimate"), key=lambda lo: lo[0], default=None)
        estimate = None
        if guess is not None and (best is None or guess[0] > best[0]):  # an estimate, and labelled so
            estimate = guess[0]
            notes = notes + [f"estimate {estimate:.4g} from {guess[1].split(', L =')[0]}: not a lower bound, since "
                             "sampled gradients can under-estimate L"]
        bounds = RadiusBounds(estimate=estimate, upper=_f(upper), lower=None if best is None else best[0],
                              lower_method=None if best is None else best[1])
        proven = w is None and best is not None and best[2] == "proved" and best[0] >= ctx.radius
        verdict = Verdict.VIOLATED if w else Verdict.PROVEN if proven else Verdict.QUANTIFIED
        milestones = tuple(Witness(x=np.asarray(x).reshape(ctx.shape).tolist(), distance=float(
            np.linalg.norm(np.asarray(x) - ctx.x0, ord=_ord(ctx.norm))), s=math.nan, output=[], confirmed=False,
            found_at=q) for q, x in _spread(st.history[:-1], 5)) if w else ()
        return Outcome(verdict, s_centre=ctx.s0, bounds=bounds, witness=w, queries=st.queries, seconds=st.seconds,
                       stop="; ".join(st.stops) or "none", centre_output=st.centre_out.tolist(), lipschitz=lip.value,
                       trace=st.trace,
                       notes=tuple(notes), milestones=milestones)

    def _lipschitz(self, model: Model, expr, label: int, ctx: "_Centre", opts, logits: bool) -> "_Lipschitz":
        if opts.get("lipschitz"):
            return _Lipschitz(float(opts["lipschitz"]), "given",
                              f"Lipschitz constant {opts['lipschitz']:g} given in the spec (vouched for by its author)")
        if ctx.norm == "l0":
            return _Lipschitz(None, "none", "no Lipschitz lower bound in l0")
        if opts["lipschitz_source"] == "estimate":
            value, spent = estimate_lipschitz(ctx.evaluate, ctx.x0, ctx.lower, ctx.upper, ctx.norm, ctx.radius,
                                              seed=opts["seed"])
            return _Lipschitz(value, "estimate", f"estimated Lipschitz constant {value:.4g} from sampled gradients "
                                                 f"({spent} queries): bounds from it are estimates")
        if not (isinstance(expr, ConfidenceGap) and expr.reading == "logits" and logits):
            return _Lipschitz(None, "none", "no sound Lipschitz constant: the layers bound the logit margin, and "
                                            "this model's outputs are not logits")
        target = expr.target_label if expr.target == "label" else None  # least-likely, untargeted: max over t
        try:
            if model.source and model.source.endswith(".onnx"):
                weights, factor = layers_of_onnx(model.source)
            else:
                weights, factor = layers_of_module(model.module)
            if model._scale is not None:  # normalisation scales the input
                factor *= float(np.max(np.abs(np.asarray(model._scale, dtype=np.float64))))
            lip = margin_from_layers(weights, factor, label, target, ctx.norm)
            return _Lipschitz(lip, "sound", f"sound Lipschitz constant {lip:.4g} of the margin from the layers' "
                                            "operator norms")
        except ValueError as err:
            return _Lipschitz(None, "none", f"no sound Lipschitz constant ({err}); no lower bound (give "
                                            "lipschitz=... to vouch for one, or lipschitz_source=\"estimate\")")

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


@dataclass
class _State:
    """One centre of maximum safe radius between its phases; queries and seconds are its own."""

    ctx: "_Centre"
    label: int
    centre_out: torch.Tensor
    lip: "_Lipschitz"
    feats: tuple | None
    budget: int
    share: int  # of the budget, for the upper bound
    wants_lower: bool
    notes: list
    queries: int = 0
    seconds: float = 0.0
    upper: float = math.inf
    witness: np.ndarray | None = None
    trace: list = field(default_factory=list)
    history: list = field(default_factory=list)  # (queries, violation) as the upper bound fell
    ibp: float | None = None  # the radius the bound engine certifies
    ibp_method: str | None = None  # by which method (IBP, CROWN, alpha-CROWN)
    ibp_note: int | None = None  # where its note is in ``notes``
    theorem: "_Grid | None" = None  # A*'s result (Theorem 1), when it ran
    stops: list = field(default_factory=list)  # why each search stopped


def _evaluator(model: Model, shape: tuple[int, ...], s_fn) -> Callable[[np.ndarray], np.ndarray]:
    def evaluate(points: np.ndarray) -> np.ndarray:
        out = model(torch.from_numpy(points).to(model.dtype).reshape((len(points),) + shape))
        return s_fn(out.to(torch.float64)[None])[0].numpy()
    return evaluate


def _evaluate_many(model: Model, ctxs: list["_Centre"], shifts: list[float] | None = None):
    """Points of several centres in one model call; each centre's s from its own outputs (lowered
    by its shift, for Theorem 1's search)."""
    def evaluate(requests: list[tuple[int, np.ndarray]]) -> list[np.ndarray]:
        pts = np.concatenate([p for _, p in requests])
        out = model(torch.from_numpy(pts).to(model.dtype).reshape((len(pts),) + ctxs[0].shape)).to(torch.float64)
        values, at = [], 0
        for k, p in requests:
            values.append(ctxs[k].s_fn(out[at:at + len(p)][None])[0].numpy() - (shifts[k] if shifts else 0.0))
            at += len(p)
        return values
    return evaluate


@dataclass(frozen=True)
class _Lipschitz:
    value: float | None
    kind: str  # given | sound | estimate | none
    note: str


@dataclass(frozen=True)
class _Grid:
    lower: float  # of the grid game's value
    upper: float  # a real violation found by unshifted A* (inf if none)
    witness: np.ndarray | None
    lower_continuous: float | None  # Theorem 1's bound of the true radius (None: condition fails)
    stop: str = "exact"


@dataclass(frozen=True)
class _Centre:
    """One centre's game data: the grid, the ball, s at the centre, and the batched evaluation."""

    x0: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    tau: float
    norm: str
    radius: float
    s0: float
    shape: tuple[int, ...]
    evaluate: Callable[[np.ndarray], np.ndarray]
    s_fn: Callable  # model outputs (1, B, m) -> s (1, B)

    def game(self, dims: np.ndarray | None, feats, shift: float = 0.0) -> GridGame:
        """The game on all dimensions (``feats`` its partition), or restricted to ``dims`` (one
        feature per dimension); ``shift`` lowers s (Theorem 1's search)."""
        evaluate = self.evaluate if not shift else (lambda p: self.evaluate(p) - shift)
        if dims is None:
            return GridGame(self.x0, self.lower, self.upper, self.tau, self.norm, self.radius, feats, evaluate)

        def sub(points):
            full = np.repeat(self.x0[None], len(points), axis=0)
            full[:, dims] = points
            return evaluate(full)
        return GridGame(self.x0[dims], self.lower[dims], self.upper[dims], self.tau, self.norm, self.radius,
                        tuple(np.array([k]) for k in range(len(dims))), sub)


def _time_share(opts, st: "_State") -> float:
    """Seconds for one centre's upper-bound search: its share of ``time`` (0: no limit)."""
    return opts["time"] * st.share / max(st.budget, 1)


def _spread(items: list, keep: int) -> list:
    """At most ``keep`` items, evenly spread, the first and last kept."""
    if len(items) <= keep:
        return items
    return [items[round(i * (len(items) - 1) / (keep - 1))] for i in range(keep)]


def _f(v: float) -> float | None:
    return v if v is not None and math.isfinite(v) else None


def _ord(norm: str):
    return {"l0": 0, "l1": 1, "l2": 2, "linf": np.inf}[norm]
