"""Sound lower bounds of the safe radius that any backend can attach to its results.

The bound engine (``nnspec.bounds``: IBP, CROWN, alpha-CROWN over the model's graph) certifies a
box radius around the centre when the property's violations are those of a logit margin: a
confidence gap read on logits, or read on probabilities with margin 0 (softmax keeps the order of
the logits, so p_l < p_t exactly when z_l < z_t). That radius is a proved lower bound of the safe
radius in L-inf, L2 and L1 alike (each ball lies in the box). Where no bound applies (another
expression, an operator without a rule) the answer is None and says why.
"""

from __future__ import annotations

import torch

from nnspec.bounds import METHODS, Unsupported, certified_radius, choose_method, engine_for, margin_objectives
from nnspec.models.model import Model
from nnspec.properties.expressions import ConfidenceGap


def bound_method(options: dict) -> str:
    """The method a task's options ask for: ``bound`` (auto | ibp | crown | alpha | none), with the
    older ``ibp=false`` meaning none."""
    if options.get("ibp") is False:
        return "none"
    return options.get("bound") or "auto"


def proved_lower(model: Model, expr, outputs_are_logits: bool, x0: torch.Tensor, label: int, centre_out: torch.Tensor,
                 radius: float, lower: torch.Tensor, upper: torch.Tensor, free: torch.Tensor | None = None,
                 method: str = "auto", time_limit: float = 10.0,
                 known_upper: float | None = None) -> tuple[float | None, str, str | None]:
    """(certified radius, note, the method's name), or (None, why not, None). ``bab`` and
    ``milp`` run for at most ``time_limit`` seconds (anytime); ``known_upper``: the distance of a
    confirmed violation, which bounds their search."""
    if not (isinstance(expr, ConfidenceGap) and outputs_are_logits
            and (expr.reading == "logits" or expr.margin == 0)):
        return None, "no sound bound: the bound engine covers confidence gaps on logits (or on probabilities " \
                     "with margin 0)", None
    target = {"label": expr.target_label, "least_likely": int(centre_out.argmin()), "untargeted": None}[expr.target]
    try:
        engine = engine_for(model)
        if method == "auto":
            method = choose_method(engine)
        if method == "milp":
            others = [t for t in range(model.n_outputs) if t != label] if target is None else [target]
            centre = float(min(centre_out[label] - centre_out[t] for t in others))
            # the same guard against float32 rounding as the other methods: look for margins up to it
            guard = 64 * torch.finfo(model.dtype).eps * (1.0 + abs(centre))
            return _milp(engine, x0, label, target, expr.margin + guard, radius, lower, upper, free, time_limit,
                         known_upper)
        r = certified_radius(engine, x0.reshape(-1), margin_objectives(model.n_outputs, label, target), expr.margin,
                             radius, lower, upper, method=method, free=free, model_eps=torch.finfo(model.dtype).eps,
                             time_limit=time_limit, known_upper=known_upper)
    except Unsupported as err:
        return None, f"no sound bound ({err})", None
    except (ValueError, RuntimeError) as err:  # shapes the graph view cannot follow: no bound, no crash
        return None, f"no sound bound ({str(err).splitlines()[0] if str(err) else type(err).__name__})", None
    name = METHODS[method]
    return r, f"{name} certifies a box of radius {r:.4g} around the centre", name


MILP_TOLERANCE = 1e-6  # relative: HiGHS's optimum is exact up to its feasibility tolerances


def _milp(engine, x0, label, target, margin, radius, lower, upper, free, time_limit, known_upper):
    from nnspec.bounds.exact import milp_radius

    bound = radius if known_upper is None else min(radius, known_upper * (1 + 1e-6) + 1e-9)
    result = milp_radius(engine, x0, label, target, bound, lower, upper, threshold=margin, free=free,
                         time_limit=time_limit)
    if result.status == "infeasible":
        r = bound if bound >= radius else bound * (1 - MILP_TOLERANCE)
        return r, f"MILP: no violation within {bound:.4g}", "MILP"
    r = max(0.0, result.lower * (1 - MILP_TOLERANCE))
    if result.status == "optimal":
        return r, f"MILP: the closest violation is at {result.distance:.6g} (exact)", "MILP"
    return r, f"MILP stopped after {time_limit:g} s: the closest violation is between {result.lower:.4g} and " \
              f"{result.distance:.4g}", "MILP"
