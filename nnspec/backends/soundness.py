"""Sound lower bounds of the safe radius that any backend can attach to its results.

The bound engine (``nnspec.bounds``: IBP, CROWN, alpha-CROWN, branch and bound over the model's
graph) certifies a radius around the centre when the property is linear in the raw outputs: a
confidence gap read on logits, or read on probabilities with margin 0 (softmax keeps the order of
the logits, so p_l < p_t exactly when z_l < z_t), a threshold on a logit, or an output formula over
y with max/min at the top of its comparisons (its violation set in disjunctive normal form), and
through the softmax for the properties that read probabilities (``nnspec.bounds.softmax``). The
region is the ball's box in L-inf and, where the method can, the L2 or L1 ball itself
(``nnspec.bounds.balls``; else its box, which holds it): a proved lower bound of the safe radius
in the region's norm. On a model that gives probabilities, a confidence gap with margin 0 is
proved on the logits before a softmax that ends its graph (the same order). Where no bound applies
(another expression, an operator without a rule) the answer is None and says why.
"""

from __future__ import annotations

import contextlib
import math
import time

import torch

from nnspec.bounds import METHODS, Unsupported, certified_radius, choose_method, engine_for, margin_objectives, softmax
from nnspec.bounds.engine import CROWN_SCALE, PassStopped
from nnspec.bounds.balls import Ball, ball_norm
from nnspec.bounds.radius import bab_whole, ball_box, splits_neurons
from nnspec.bounds.softmax import NotProbability, reads_probabilities
from nnspec.models.model import Model
from nnspec.properties.expressions import ConfidenceGap, OutputThreshold, OutputValue, as_probabilities
from nnspec.properties.formulas import NotLinear, OutputFormula


# bound=auto's escalation: branch and bound is tried on the whole ball where CROWN's radius is at
# least the ball's radius over this factor (on the demo networks branch and bound's 10 s lift
# CROWN's radius by 1.1-1.25x, docs/benchmarks.md); a wider gap is left to an explicit bound=bab
ESCALATE_WITHIN = 1.5


def linear_objectives(expr, n_outputs: int, label: int, centre_out: torch.Tensor, outputs_are_logits: bool):
    """What a proof must show, as rows over the raw outputs: for every group g, some row r of g
    has C[r] @ y + d[r] > 0. Returns (C (S, m), d (S,), groups (S,)); raises NotLinear.

    A confidence gap on logits (or on probabilities with margin 0: softmax keeps the order) is one
    row per other label; a threshold on a logit one row; an output formula its violation set's
    disjuncts (a group each: one false atom refutes a conjunction)."""
    if isinstance(expr, ConfidenceGap):
        if not (outputs_are_logits and (expr.reading == "logits" or expr.margin == 0)):
            raise NotLinear("a confidence gap on probabilities with a margin is not linear in the logits")
        target = {"label": expr.target_label, "least_likely": int(centre_out.argmin()), "untargeted": None}[expr.target]
        C = margin_objectives(n_outputs, label, target)
        return C, torch.full((len(C),), -float(expr.margin), dtype=torch.float64), torch.arange(len(C))
    if isinstance(expr, OutputThreshold):
        if expr.fn == "prob" and outputs_are_logits:
            raise NotLinear("a probability threshold is not linear in the logits")
        i = label if expr.index is None else expr.index
        C = torch.zeros(1, n_outputs, dtype=torch.float64)
        below = expr.cmp in ("<", "<=")
        C[0, i] = -1.0 if below else 1.0
        return C, torch.tensor([expr.threshold if below else -expr.threshold], dtype=torch.float64), torch.zeros(1, dtype=torch.long)
    if isinstance(expr, OutputFormula):
        form = expr.linear_form(n_outputs, label, outputs_are_logits)
        if not form:  # the violation set is empty: nothing to refute
            return torch.zeros(1, n_outputs, dtype=torch.float64), torch.ones(1, dtype=torch.float64), \
                torch.zeros(1, dtype=torch.long)
        rows, offsets, groups = [], [], []
        for g, conj in enumerate(form):
            for atom in conj:
                rows.append(atom.c)
                offsets.append(atom.d)
                groups.append(g)
        return (torch.tensor(rows, dtype=torch.float64), torch.tensor(offsets, dtype=torch.float64),
                torch.tensor(groups, dtype=torch.long))
    raise NotLinear(f"no linear form for {type(expr).__name__}")


def reads_order_only(expr, outputs_are_logits: bool) -> bool:
    """Whether a property on a model that gives probabilities reads only their order (a confidence
    gap with margin 0): softmax keeps the order of the logits, so bounds on the logits before a
    final softmax prove it."""
    return not outputs_are_logits and isinstance(expr, ConfidenceGap) and expr.margin == 0


def bound_method(options: dict) -> str:
    """The method a task's options ask for: ``bound`` (auto | ibp | crown | alpha | none), with the
    older ``ibp=false`` meaning none."""
    if options.get("ibp") is False:
        return "none"
    return options.get("bound") or "auto"


def proved_lower(model: Model, expr, outputs_are_logits: bool, x0: torch.Tensor, label: int, centre_out: torch.Tensor,
                 radius: float, lower: torch.Tensor, upper: torch.Tensor, free: torch.Tensor | None = None,
                 method: str = "auto", time_limit: float = 10.0,
                 known_upper: float | None = None, whole: bool = False,
                 found: list | None = None, reference_out: torch.Tensor | None = None,
                 norm: str = "linf", escalate: bool = False) -> tuple[float | None, str, str | None]:
    """(certified radius, note, the method's name), or (None, why not, None). ``bab`` and
    ``milp`` run for at most ``time_limit`` seconds (anytime); ``known_upper``: the distance of a
    confirmed violation, which bounds their search. ``whole``: the region is a box (the ball of
    ``radius`` cut to [lower, upper]): prove all of it first, with the whole time; branch and bound
    on input splits appends candidate counterexamples it meets to ``found``. A property read
    through the softmax (``softmax.reads_probabilities``) is proved on rows over the logits
    (``softmax.rows``, on a graph with the exponentials' head); ``reference_out``: the model's outputs
    at a KL reference input. ``norm``: the ball's (linf, l2, l1); an L1 or L2 radius is proved
    over the ball itself where the method can (``certified_radius``), else over its box.
    ``escalate`` (``method="auto"``, for a search that found no violation): where the default
    method (CROWN) falls short of ``radius`` by at most a factor ESCALATE_WITHIN, branch and bound
    gets ``time_limit`` seconds to prove the whole ball, the property's question. Past CROWN's
    default scale ``auto`` is IBP's radius, then CROWN from it for ``time_limit`` seconds
    (``certified_radius``'s ``anytime``; none at 0), and no escalation."""
    ball = ball_norm(norm)
    escalated = ""
    through_softmax = _through_softmax(model, reads_probabilities(expr, outputs_are_logits), outputs_are_logits)
    before_softmax = through_softmax and not outputs_are_logits
    C = d = groups = None
    if not through_softmax:
        try:
            C, d, groups = linear_objectives(expr, model.n_outputs, label, centre_out, outputs_are_logits)
        except NotLinear as err:
            if not reads_order_only(expr, outputs_are_logits):
                return None, f"no sound bound: {err}", None
            # the model gives probabilities: where its graph ends in a softmax, the same order of the
            # logits before it is what a proof must show
            C, d, groups = linear_objectives(expr, model.n_outputs, label, centre_out, True)
            before_softmax, why = True, f"no sound bound: {err}"
    try:
        engine = engine_for(model, linear=False, before_softmax=before_softmax)
        if before_softmax and not through_softmax and not engine.graph.stripped_softmax:
            return None, why + " (and the graph does not end in a softmax)", None
        automatic = method == "auto"
        if automatic:
            method = choose_method(engine)
        # past CROWN's default scale: IBP's radius, then CROWN from it for time_limit seconds (anytime)
        anytime = automatic and method == "ibp" and ball != "l0" and time_limit > 0
        if anytime:
            method = "crown"
        if ball == "l0" and method in ("milp", "hull"):  # (no L0 MILP; facets are cut for boxes)
            method = "alpha"
        if ball == "l0" and method == "ibp":
            return None, "no sound bound: IBP bounds the box of an L0 ball, the whole domain " \
                         f"({'the default for a network this wide' if automatic else 'use bound=crown'})", None
        if method != "ibp":
            engine = engine_for(model, before_softmax=before_softmax)
        if method == "milp" and (before_softmax or through_softmax):
            return None, "no sound bound: the MILP mode reads logits (use bound=bab)", None
        if method == "milp":
            if not isinstance(expr, ConfidenceGap):
                return None, "no sound bound: the MILP mode covers confidence gaps (use bound=bab)", None
            target = {"label": expr.target_label, "least_likely": int(centre_out.argmin()),
                      "untargeted": None}[expr.target]
            others = [t for t in range(model.n_outputs) if t != label] if target is None else [target]
            centre = float(min(centre_out[label] - centre_out[t] for t in others))
            # the same guard against float32 rounding as the other methods: look for margins up to it
            guard = 64 * torch.finfo(model.dtype).eps * (1.0 + abs(centre))
            r, note, name = _milp(engine, x0, label, target, expr.margin + guard, radius, lower, upper, free,
                                  time_limit, known_upper, "l1" if norm == "l1" else "linf")
            if ball == "l2":  # the MILP's L-inf distance bounds the L2 one; alpha-CROWN may prove the ball further
                note += " (in L-inf: a lower bound of the L2 distance)"
                over_ball = certified_radius(engine, x0.reshape(-1), margin_objectives(model.n_outputs, label, target),
                                             expr.margin, radius, lower, upper, method="alpha", free=free,
                                             model_eps=torch.finfo(model.dtype).eps, norm=ball)
                if over_ball > r:
                    return over_ball, f"alpha-CROWN certifies an L2 ball of radius {over_ball:.4g} ({note})", \
                        METHODS["alpha"]
            return r, note, name
        if through_softmax:
            rows = _softmax_rows(engine, model, expr, x0, label, outputs_are_logits, reference_out,
                                 int(centre_out.argmin()))
            C, d, groups = rows.C, rows.d, rows.groups
            if rows.head is not None:
                engine = engine_for(model, linear=method != "ibp", before_softmax=before_softmax, head=rows.head)
            if not rows.exact:  # tangent planes: a point where they fail need not violate
                found = None
        report: dict = {}
        r = certified_radius(engine, x0.reshape(-1), C, 0.0, radius, lower, upper, method=method, free=free,
                             model_eps=torch.finfo(model.dtype).eps, time_limit=time_limit,
                             known_upper=known_upper, offsets=d, groups=groups, whole=whole, found=found,
                             norm=norm, anytime=anytime, report=report)
        if anytime:
            escalated = f"; the default past {CROWN_SCALE:,} neurons per layer: IBP's radius, then CROWN one box " \
                        f"at a time for up to bound_time={time_limit:g} s"
            if report.get("method") == "ibp":
                escalated += ", which proved no more"
            if report.get("stopped"):
                escalated += " (the time ran out; bound=crown finishes the search)"
            method = report.get("method", method)
        elif escalate and automatic and method == "crown" and known_upper is None and time_limit > 0 and \
                radius / ESCALATE_WITHIN <= r < radius and (ball != "l0" or splits_neurons(engine)):
            # (an L0 ball's box is the whole domain: input splitting would try to prove all of it)
            proved, escalated = _escalate(engine, x0, C, d, groups, radius, lower, upper, free, model, time_limit,
                                          found, ball)
            if proved:
                how = " (the probabilities through rows over the logits)" if through_softmax else ""
                return radius, f"branch and bound proves {escalated}{how} (CROWN certified {r:.4g})", \
                    METHODS["bab"]
            escalated = f"; branch and bound did not prove {escalated}"
    except (Unsupported, NotProbability) as err:
        return None, f"no sound bound ({err})", None
    except NotLinear as err:
        return None, f"no sound bound: {err}", None
    except (ValueError, RuntimeError) as err:  # shapes the graph view cannot follow: no bound, no crash
        return None, f"no sound bound ({str(err).splitlines()[0] if str(err) else type(err).__name__})", None
    name = METHODS[method]
    how = " (the probabilities through rows over the logits)" if through_softmax else ""
    if automatic and method == "ibp" and not anytime:  # past CROWN's default scale with no time for CROWN
        escalated += f"; IBP is the default past {CROWN_SCALE:,} neurons per layer with bound_time=0, bound=crown " \
                     "certifies more at seconds per input"
    if ball is not None and not whole:
        region = "its box" if method == "ibp" else "the ball" if method in ("crown", "alpha") else \
            "the ball or its box"
        return r, f"{name} certifies an {ball.upper()} ball of radius {r:.4g} around the centre{how} " \
                  f"(bounded over {region}){escalated}", name
    if whole:
        return r, (f"{name} proves the whole box{how}" if r >= radius else
                   f"{name} did not prove the whole box; it certifies radius {r:.4g} around the centre{how}"
                   f"{escalated}"), name
    return r, f"{name} certifies a box of radius {r:.4g} around the centre{how}{escalated}", name


def past_crown_scale(model: Model) -> bool:
    """Whether the model is past CROWN's default scale (``BoundEngine.past_crown_scale``), where
    ``bound=auto`` gives CROWN ``bound_time`` seconds from IBP's radius and does not escalate."""
    try:
        return engine_for(model, linear=False).past_crown_scale
    except (Unsupported, ValueError, RuntimeError):
        return False


def _escalate(engine, x0, C, d, groups, radius, lower, upper, free, model, time_limit, found,
              ball: str | None) -> tuple[bool, str]:
    """bound=auto's branch and bound on the whole region (``radius.bab_whole``): (proved, what it
    was and how long it took, or why it stopped). An L1/L2 ball is bounded as such where branch and
    bound splits ReLUs; input splitting and the smooth neurons' halving prove its box, which holds
    it. A failure keeps CROWN's radius (the caller's)."""
    region = "the whole box" if ball is None else f"the whole {ball.upper()} ball" if splits_neurons(engine) else \
        f"the {ball.upper()} ball's whole box"
    started = time.perf_counter()
    try:
        r = bab_whole(engine, x0, C, 0.0, radius, lower, upper, free=free, model_eps=torch.finfo(model.dtype).eps,
                      time_limit=time_limit, offsets=d, groups=groups, found=found, norm=ball)
    except (Unsupported, ValueError, RuntimeError) as err:
        return False, f"{region} ({str(err).splitlines()[0] if str(err) else type(err).__name__})"
    return r >= radius, f"{region} of radius {radius:.4g} in {time.perf_counter() - started:.1f} s"


def _through_softmax(model: Model, reads: bool, outputs_are_logits: bool) -> bool:
    """Whether a property that ``reads`` probabilities is proved through the softmax: on a model
    that gives logits, on those; on one that gives probabilities, on the logits before a softmax
    that ends its graph (else it is linear in the outputs themselves, or has no bound)."""
    if not reads or outputs_are_logits:
        return reads
    try:
        return engine_for(model, linear=False, before_softmax=True).graph.stripped_softmax
    except Unsupported:
        return False


def _centre_logits(engine, x0: torch.Tensor, m: int) -> torch.Tensor:
    """The graph's first m outputs (the logits) at the point x0, exact up to rounding."""
    point = x0.double().reshape((1,) + tuple(engine.graph.input_shape))
    n = int(torch.Size(engine.by_name[engine.graph.output].shape).numel())
    return engine.bound(point, point, torch.eye(n, dtype=torch.float64)[None, :m], method="ibp")[0]


def _softmax_rows(engine, model: Model, expr, x0: torch.Tensor, label: int, outputs_are_logits: bool,
                  reference_out: torch.Tensor | None, least_likely: int) -> softmax.Rows:
    """The rows over the graph's logits (and a head's exponentials) that prove ``expr``; the
    centre's logits from the graph at the point itself (exact up to rounding); ``least_likely``:
    the least likely label as the searches read it (the model's own outputs at the centre)."""
    m = int(torch.Size(engine.by_name[engine.graph.output].shape).numel())
    centre_z = _centre_logits(engine, x0, m)
    reference_p = None if reference_out is None else as_probabilities(reference_out.double(), outputs_are_logits)
    reqs = softmax.requirements(expr, m, label, centre_z, reference_p, outputs_are_logits, least_likely)
    return softmax.rows(reqs, centre_z, torch.finfo(model.dtype).eps)


def proved_range(model: Model, expr: OutputValue, outputs_are_logits: bool, x0: torch.Tensor, label: int,
                 radius: float, lower: torch.Tensor, upper: torch.Tensor, free: torch.Tensor | None = None,
                 method: str = "auto", norm: str = "linf", time_limit: float = 10.0
                 ) -> tuple[tuple[float, float] | None, str]:
    """An interval that a quantity (``reachability range``) provably stays within over the box of
    ``radius`` around ``x0`` (which holds every ball of that radius; with ``norm`` l1 or l2 and a
    linear method, over that ball cut to the box), and a note; (None, why not).
    A logit, or a probability the model outputs without a final softmax, is a row over the
    outputs; a probability after a softmax is 1 / (1 + sum_k exp(z_k - z_i)) over the logits, its
    sum bounded through the exponentials' head (``softmax.ExpHead``). ``bab`` and ``milp`` use
    alpha-CROWN here. Widened for the model's float32 arithmetic as proofs are. ``auto`` past
    CROWN's default scale: one CROWN pass where ``time_limit`` (``bound_time``) is above 0, stopped
    at it (IBP's enclosure then), else IBP."""
    i = label if expr.index is None else expr.index
    through = _through_softmax(model, expr.fn == "prob", outputs_are_logits)
    before_softmax = through and not outputs_are_logits
    stack = contextlib.ExitStack()
    deadline = None
    try:
        engine = engine_for(model, linear=False, before_softmax=before_softmax)
        if method == "auto":
            method = "crown" if time_limit > 0 else choose_method(engine)  # (one pass: no search here)
            if method == "crown" and engine.past_crown_scale:  # a pass can take minutes: at most time_limit
                deadline = time.perf_counter() + time_limit
        how = {"ibp": "ibp", "crown": "crown"}.get(method, "alpha")
        if how != "ibp":
            engine = engine_for(model, before_softmax=before_softmax)
            stack.enter_context(engine.stop_at(deadline))
        shape = (1,) + tuple(engine.graph.input_shape)
        x0 = x0.double().reshape(-1)
        mask = torch.ones_like(x0) if free is None else free.double().reshape(-1)
        lo, hi = (b.reshape(shape) for b in ball_box(x0, radius, lower.double().reshape(-1),
                                                     upper.double().reshape(-1), mask))
        ball = None if how == "ibp" or ball_norm(norm) is None else \
            Ball(norm, x0.reshape(1, -1), torch.tensor([float(radius)], dtype=torch.float64))
        eps = torch.finfo(model.dtype).eps
        m = int(torch.Size(engine.by_name[engine.graph.output].shape).numel())
        if not through:
            rows = torch.zeros(1, 2, m, dtype=torch.float64)
            rows[0, 0, i], rows[0, 1, i] = 1.0, -1.0
            low, neg_high = (float(v) for v in engine.bound(lo, hi, rows, method=how, ball=ball)[0])
            guard = 64 * eps * (1 + max(abs(low), abs(neg_high)))
            found = (low - guard, -neg_high + guard)
        else:
            others = [k for k in range(m) if k != i]
            head = softmax.ExpHead(softmax.differences(m, i, others),
                                   torch.full((len(others),), softmax.MAX_EXPONENT, dtype=torch.float64))
            engine = engine_for(model, linear=how != "ibp", before_softmax=before_softmax, head=head)
            stack.enter_context(engine.stop_at(deadline))
            centre = _centre_logits(engine, x0, m)
            # -log p_i = LSE(z) - z_i is above each tangent plane's row (softmax.tangent_rows)
            planes, offsets = softmax.tangent_rows(softmax.LogSumExpAbove(torch.eye(m, dtype=torch.float64)[i], 0.0),
                                                    centre)
            rows = torch.zeros(1, 2 + len(planes), m + len(others), dtype=torch.float64)
            rows[0, 0, m:], rows[0, 1, m:] = 1.0, -1.0
            rows[0, 2:, :m] = planes
            bounds = engine.intervals(lo, hi, "ibp" if how == "ibp" else "crown", ball=ball)
            values = engine.bound(lo, hi, rows, method=how, bounds=bounds)[0]
            out_lo, out_hi = (b.reshape(-1)[m:] for b in bounds[engine.graph.output])
            sum_low = max(float(values[0]), float(out_lo.sum()))
            sum_high = min(-float(values[1]), float(out_hi.sum()))
            delta = softmax.FLOAT32_ROWS * eps * (1.0 + float(centre.abs().max()))
            spread = math.exp(2 * delta)  # logits moved by delta move the sum by at most this factor
            plane = float((values[2:] + offsets - delta * planes.abs().sum(dim=1)).max())
            # a capped sum bounds the true one from below; from above only where no term reached the cap
            capped = not sum_high < math.exp(softmax.MAX_EXPONENT)
            found = (0.0 if capped else 1.0 / (1.0 + sum_high * spread),
                     min(1.0, 1.0 / (1.0 + max(0.0, sum_low) / spread), math.exp(-plane)))
    except PassStopped:  # past the scale, CROWN's pass ran past bound_time: IBP's enclosure
        stack.close()
        found, note = proved_range(model, expr, outputs_are_logits, x0, label, radius, lower, upper, free, "ibp",
                                   norm)
        return found, f"{note} (the default's CROWN pass ran past bound_time={time_limit:g} s)"
    except Unsupported as err:
        return None, f"no sound range ({err})"
    except (ValueError, RuntimeError) as err:
        return None, f"no sound range ({str(err).splitlines()[0] if str(err) else type(err).__name__})"
    finally:
        stack.close()
    what = f"{expr.fn}({'label' if expr.index is None else i})"
    region = "bounding box" if ball is None else f"{norm.upper()} ball"
    return found, f"{METHODS[how]} proves {what} stays within [{found[0]:.6g}, {found[1]:.6g}] over the region's {region}"


MILP_TOLERANCE = 1e-6  # relative: HiGHS's optimum is exact up to its feasibility tolerances


def _milp(engine, x0, label, target, margin, radius, lower, upper, free, time_limit, known_upper, norm="linf"):
    """The MILP's radius in ``norm`` (linf, or l1: exact in that norm; on an L2 ball the caller
    passes linf, whose distance is a lower bound of the L2 one)."""
    from nnspec.bounds.exact import milp_radius

    bound = radius if known_upper is None else min(radius, known_upper * (1 + 1e-6) + 1e-9)
    result = milp_radius(engine, x0, label, target, bound, lower, upper, threshold=margin, free=free,
                         time_limit=time_limit, norm=norm)
    what = "" if norm == "linf" else f" ({norm.upper()})"
    if result.status == "infeasible":
        r = bound if bound >= radius else bound * (1 - MILP_TOLERANCE)
        return r, f"MILP: no violation within {bound:.4g}{what}", "MILP"
    r = min(radius, max(0.0, result.lower * (1 - MILP_TOLERANCE)))
    if result.status == "optimal":
        return r, f"MILP: the closest violation{what} is at {result.distance:.6g} (exact)", "MILP"
    return r, f"MILP stopped after {time_limit:g} s: the closest violation{what} is between {result.lower:.4g} and " \
              f"{result.distance:.4g}", "MILP"
