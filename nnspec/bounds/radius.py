"""Certified radii: the largest ball around a centre that a bound method proves safe.

A property is proved on a box when every one of its linear objectives c @ y keeps a lower bound
above the threshold (a logit margin: y_label - y_t > margin for every t). Boxes grow with the
radius and every method here respects inclusion, so certification is monotone in r: a batched
bisection checks ``points`` radii per round (one batched bound call) and narrows the bracket.

Floating point: the bounds are float64 arithmetic on the weights; the network runs in its own dtype
(float32: relative rounding about 1e-7 per operation). A margin bounded by less than that rounding
could still flip on the model, so a proof asks for 64 eps (1 + |margin at the centre|) more.
"""

from __future__ import annotations

import math
import time

import torch

from nnspec.bounds.balls import Ball, ball_norm as _ball_norm
from nnspec.bounds.engine import BoundEngine, PassStopped
from nnspec.bounds.hull import hull_bound
from nnspec.bounds.relax import numel

METHODS = {"ibp": "interval bound propagation", "crown": "CROWN", "alpha": "alpha-CROWN",
           "hull": "alpha-CROWN with hull facets", "bab": "branch and bound",
           "milp": "MILP"}


def margin_objectives(n_outputs: int, label: int, target: int | None = None) -> torch.Tensor:
    """Rows e_label - e_t for every t != label (or the one target): (S, m)."""
    targets = [target] if target is not None else [t for t in range(n_outputs) if t != label]
    C = torch.zeros(len(targets), n_outputs, dtype=torch.float64)
    for s, t in enumerate(targets):
        C[s, label] += 1.0
        C[s, t] -= 1.0
    return C


def group_max(values: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """(B, S) row values -> (B, G): the max over each group's rows."""
    G = int(groups.max()) + 1
    best = torch.full((values.shape[0], G), -torch.inf, dtype=values.dtype)
    return best.scatter_reduce(1, groups.view(1, -1).expand(values.shape[0], -1), values, "amax")


def reduce_rows(low: torch.Tensor, offsets: torch.Tensor | None = None,
                groups: torch.Tensor | None = None) -> torch.Tensor:
    """Row bounds (B, S) -> one value per box (B,): min over groups of max over the group's rows of
    low + offset. Without groups, every row is its own group (the min over rows)."""
    if offsets is not None:
        low = low + offsets.to(low)
    if groups is None:
        return low.min(dim=1).values
    return group_max(low, groups).min(dim=1).values


def certified_radius(engine: BoundEngine, x0: torch.Tensor, C: torch.Tensor, threshold: float, radius: float,
                     lower: torch.Tensor, upper: torch.Tensor, *, method: str = "crown",
                     free: torch.Tensor | None = None, model_eps: float = 2.0 ** -23, rounds: int = 4,
                     points: int = 8, time_limit: float = 10.0, known_upper: float | None = None,
                     offsets: torch.Tensor | None = None, groups: torch.Tensor | None = None,
                     whole: bool = False, found: list | None = None, norm: str | None = None,
                     anytime: bool = False, report: dict | None = None) -> float:
    """The largest r in [0, radius] (to about 7/points**rounds of itself) whose box around ``x0``
    (clipped to [lower, upper]; only the ``free`` dimensions move) ``method`` proves to keep every
    objective C @ y above ``threshold``; 0 if none. ``bab``: CROWN's radius first; without
    ``known_upper`` (a confirmed violation's distance, which bounds the radius above) branch and
    bound on the whole ball with WHOLE_SHARE of the time; then a bisection whose every step is a
    branch-and-bound proof, until ``time_limit`` seconds (anytime: the best radius proved so far).
    ``offsets``/``groups``: the objective is min over groups of max over a group's rows of
    C @ y + offset (``reduce_rows``). ``whole``: with bab and no ``known_upper``, the question is
    the ball of ``radius`` itself (a box region): all the time goes to proving it, and the answer
    is ``radius`` or 0. ``found`` collects branch and bound's candidate counterexamples.
    ``norm`` l1 | l2: the radius of that ball (cut to the box) rather than of the box: CROWN,
    alpha-CROWN and branch and bound's ReLU splitting minimise over the ball
    (``nnspec.bounds.balls``); IBP bounds its box; hull and input splitting prove boxes, so with
    a ball they give the larger of their box radius and alpha-CROWN's ball radius (each proves
    the ball). ``norm`` l0: ``l0_radius``. Past CROWN's default scale the search goes one box at a
    time (``_one_box_at_a_time``); ``anytime``: there it stops before a pass that would end past
    ``time_limit`` seconds, with the best radius proved so far. ``report`` (a dict): receives
    ``method``, the method that proved the radius returned ("ibp" where the one-box search's
    linear passes proved no more than IBP's sweep), and ``stopped``, whether the time ran out."""
    ball_norm = _ball_norm(norm)
    if ball_norm == "l0":
        return l0_radius(engine, x0, C, threshold, radius, lower, upper, method=method, free=free,
                         model_eps=model_eps, points=points, time_limit=time_limit, known_upper=known_upper,
                         offsets=offsets, groups=groups)
    if ball_norm is not None and (method == "hull" or (method == "bab" and not splits_neurons(engine))):
        # boxes only: the larger of the box's radius and alpha-CROWN's over the ball
        over_ball = certified_radius(engine, x0, C, threshold, radius, lower, upper, method="alpha", free=free,
                                     model_eps=model_eps, rounds=rounds, points=points, offsets=offsets,
                                     groups=groups, norm=ball_norm)
        if over_ball >= radius:
            return radius
        over_box = certified_radius(engine, x0, C, threshold, radius, lower, upper, method=method, free=free,
                                    model_eps=model_eps, rounds=rounds, points=points,
                                    time_limit=time_limit, known_upper=known_upper, offsets=offsets,
                                    groups=groups, whole=whole, found=found)
        return max(over_ball, over_box)
    if method == "bab":
        return _bab_radius(engine, x0, C, threshold, radius, lower, upper, free=free, model_eps=model_eps,
                           time_limit=time_limit, known_upper=known_upper, offsets=offsets, groups=groups,
                           whole=whole, found=found, norm=ball_norm)
    shape = (-1,) + tuple(engine.graph.input_shape)
    x0 = x0.double().reshape(1, -1)
    lower, upper = lower.double().reshape(1, -1).expand_as(x0), upper.double().reshape(1, -1).expand_as(x0)
    mask = torch.ones_like(x0) if free is None else free.double().reshape(1, -1)
    C = C.double()
    if method == "ibp":
        ball_norm = None  # IBP bounds the ball's box

    def margins(rs: torch.Tensor, below: float = -math.inf, method: str = method) -> torch.Tensor:
        """``below``: hull's facets go to the objectives still below it after alpha-CROWN."""
        lo = torch.minimum(torch.maximum(x0 - rs[:, None] * mask, lower), x0)
        hi = torch.maximum(torch.minimum(x0 + rs[:, None] * mask, upper), x0)
        objectives = C[None].expand(len(rs), -1, -1)
        if ball_norm is not None:
            ball = Ball(ball_norm, x0.expand(len(rs), -1), rs)
            return reduce_rows(engine.bound(lo.reshape(shape), hi.reshape(shape), objectives, method=method,
                                            ball=ball), offsets, groups)
        if method == "hull":
            d = None if offsets is None else offsets.double().view(1, -1).expand(len(rs), -1)
            return reduce_rows(hull_bound(engine, lo.reshape(shape), hi.reshape(shape), objectives, d, below=below),
                               None, groups)
        return reduce_rows(engine.bound(lo.reshape(shape), hi.reshape(shape), objectives, method=method), offsets,
                           groups)

    centre_margin = float(margins(torch.zeros(1, dtype=torch.float64), method="ibp")[0])  # (at a point: exact)
    slack = 64 * model_eps * (1.0 + abs(centre_margin))

    def proves(rs: torch.Tensor, method: str = method) -> torch.Tensor:
        return margins(rs, threshold + slack, method) > threshold + slack

    def excess(rs: torch.Tensor, method: str = method) -> torch.Tensor:
        """How far each radius's bound is above what a proof needs (> 0: proved)."""
        return margins(rs, threshold + slack, method) - (threshold + slack)

    # a geometric sweep radius * 8^-k (one batch), then linear refinement of the bracket
    rs = radius * torch.pow(8.0, -torch.arange(0, 16, dtype=torch.float64))
    if report is not None:
        report.update(method=method, stopped=False)
    if method != "ibp" and engine.past_crown_scale:
        deadline = time.perf_counter() + time_limit if anytime else None
        with engine.stop_at(deadline):  # (a pass that would overrun the time stops, too)
            return _one_box_at_a_time(excess, rs, centre_margin - (threshold + slack), deadline=deadline,
                                      known_upper=known_upper, whole=whole, report=report)
    ok = proves(rs)
    if not bool(ok.any()):
        return 0.0
    k = int(ok.nonzero()[0])
    if k == 0:
        return radius
    good, bad = float(rs[k]), float(rs[k - 1])
    for _ in range(rounds):
        rs = torch.linspace(good, bad, points + 1, dtype=torch.float64)[1:]
        ok = proves(rs)
        if bool(ok.all()):
            return float(rs[-1])
        first_bad = int((~ok).nonzero()[0])
        good, bad = (float(rs[first_bad - 1]) if first_bad > 0 else good), float(rs[first_bad])
    return good


MAX_ONE_BOX_PASSES = 40  # a safeguard: the searches measured take 6-10
ONE_BOX_RESOLUTION = 0.01  # the one-box search stops when its bracket is within 1% of its lower end


def _one_box_at_a_time(excess, rs: torch.Tensor, centre: float, deadline: float | None = None,
                       known_upper: float | None = None, whole: bool = False, report: dict | None = None) -> float:
    """``certified_radius``'s search on a network past CROWN's default scale, where a pass costs
    seconds per box and more the more neurons a box leaves unstable (so that one batch with the
    largest radii, every neuron unstable, costs most of the time). ``excess(rs, method)``: how far
    each radius's bound is above what a proof needs (> 0: proved), decreasing in the radius;
    ``centre``: its value at radius 0 (the centre's own margin). IBP's sweep first (cheap; every
    method proves what IBP proves, ``BoundEngine.bound``), then one box per pass: 8x IBP's radius,
    then up by the secant through the last two proved radii's values (their linear extrapolation
    to 0, from 1.25x to 2x up: the bound falls faster than linearly as more neurons become
    unstable, so the extrapolation overshoots, 3.3x on the DeepGame CNN), and once a radius
    fails, regula falsi on the bracket (the Illinois variant, at least a quarter of the bracket
    up, since a failed radius's value can be far below 0; a bisection where a value is unknown)
    until the bracket is within ONE_BOX_RESOLUTION of its lower end. ``deadline``
    (time.perf_counter()): no pass starts that the last one's duration says would end after it,
    and one that runs past it stops (``BoundEngine.stop_at``: PassStopped); the radius is the best
    proved so far. ``known_upper``: a confirmed violation's distance, no
    radius from which is tried. ``whole``: the question (rs[0]) is tried first."""
    ibp = excess(rs, "ibp")
    ok = ibp > 0
    first = int(ok.nonzero()[0]) if bool(ok.any()) else len(rs)
    top = float(rs[0])
    last = [0.0]  # the last pass's seconds
    passes = [0]

    def attempt(r: float) -> float | None:
        """The excess at r (nan where not computed: past a known violation); None where the time is up."""
        if known_upper is not None and r >= known_upper:
            return math.nan
        now = time.perf_counter()
        if passes[0] >= MAX_ONE_BOX_PASSES or deadline is not None and now + last[0] > deadline:
            if report is not None and passes[0] < MAX_ONE_BOX_PASSES:
                report["stopped"] = True
            return None
        try:
            value = float(excess(torch.tensor([r], dtype=torch.float64))[0])
        except PassStopped:  # (the engine's own deadline, the same: ``BoundEngine.stop_at``)
            if report is not None:
                report["stopped"] = True
            return None
        last[0] = time.perf_counter() - now
        passes[0] += 1
        return value

    def result(radius: float) -> float:
        if report is not None and radius == ibp_radius:
            report["method"] = "ibp"  # (the linear passes proved no more than IBP's sweep)
        return radius

    ibp_radius = float(rs[first]) if first < len(rs) else 0.0
    if first == 0:
        return result(top)
    good, good_f = ibp_radius, (float(ibp[first]) if first < len(rs) else centre)
    previous = None  # (radius, excess) of the proved point before ``good`` from a linear pass
    linear_good = False  # whether good's excess is the method's (else IBP's, a lower estimate)
    bad, bad_f = None, math.nan
    if whole:
        value = attempt(top)
        if value is None:
            return result(good)
        if value > 0:
            return top
        bad, bad_f = top, value
    while bad is None:  # up from IBP's radius until a radius fails
        if not linear_good or good == 0.0:
            r = 8 * good if good > 0 else float(rs[-1])
        else:
            p, pf = previous if previous is not None else (0.0, centre)
            guess = good + good_f * (good - p) / (pf - good_f) if pf > good_f else 2 * good
            r = min(max(guess, 1.25 * good), 2 * good)
        r = min(r, top)
        if known_upper is not None and r >= known_upper:
            bad = known_upper  # (no value there: the bracket is bisected until a pass fails)
            break
        value = attempt(r)
        if value is None:
            return result(good)
        if value > 0:
            if r >= top:
                return top
            if linear_good:
                previous = (good, good_f)
            good, good_f, linear_good = r, value, True
        else:
            bad, bad_f = r, value
    if good == 0.0:  # (not even the sweep's smallest radius)
        return result(0.0)
    side = 0  # the end kept by the last step: -1 good, +1 bad (Illinois: halve its value when kept twice)
    while bad - good > good * ONE_BOX_RESOLUTION:
        width = bad - good
        if math.isfinite(bad_f) and math.isfinite(good_f) and good_f > bad_f:
            r = good + good_f * width / (good_f - bad_f)
            r = min(max(r, good + width / 4), bad - width / 16)
        else:
            r = good + width / 2
        value = attempt(r)
        if value is None:
            break
        if value > 0:
            good, good_f = r, value
            if side == -1:
                bad_f /= 2
            side = -1
        else:
            bad, bad_f = r, value
            if side == 1:
                good_f /= 2
            side = 1
    return result(good)


def l0_radius(engine: BoundEngine, x0, C, threshold, radius, lower, upper, *, method: str = "crown", free=None,
              model_eps: float = 2.0 ** -23, points: int = 8, time_limit: float = 10.0,
              known_upper: float | None = None, offsets=None, groups=None) -> float:
    """The largest whole number k <= ``radius`` such that changing any k coordinates (of the
    ``free`` ones), each anywhere in [lower, upper], keeps every objective above ``threshold``;
    0 if none (CROWN or alpha-CROWN over the L0 ball, ``balls._largest_gains``: the box of an L0
    ball is the whole domain, where IBP proves nothing useful). ``known_upper``: a confirmed
    violation's count, which no k reaches. The counts are searched in batches of ``points``
    (certification is monotone in k). ``bab`` starts from alpha-CROWN's count and, where it splits
    ReLUs, gives branch and bound ``time_limit`` seconds: WHOLE_SHARE of it to the largest count
    (the question), the rest to the counts above alpha-CROWN's, one by one (ReLU splitting over the
    L0 ball; input splitting would prove its box, the whole domain); ``hull`` and ``milp`` bound it
    with alpha-CROWN."""
    x0, lower, upper, mask, slack = _flat_with_slack(engine, x0, C, lower, upper, free, model_eps, offsets, groups)
    lo, hi = l0_box(x0, lower, upper, mask)
    top = int(math.floor(radius + 1e-9))
    if known_upper is not None:
        top = min(top, int(math.ceil(known_upper - 1e-9)) - 1)
    if top <= 0:
        return 0.0
    shape = (-1,) + tuple(engine.graph.input_shape)
    inner = "alpha" if method in ("alpha", "hull", "milp", "bab") else "ibp" if method == "ibp" else "crown"

    def proves(ks: list[int]) -> torch.Tensor:
        B = len(ks)
        ball = Ball("l0", x0.reshape(1, -1).expand(B, -1), torch.tensor(ks, dtype=torch.float64))
        low = engine.bound(lo.reshape(shape).expand(B, *shape[1:]), hi.reshape(shape).expand(B, *shape[1:]),
                           C.double()[None].expand(B, -1, -1), method=inner, ball=None if inner == "ibp" else ball)
        return reduce_rows(low, offsets, groups) > threshold + slack

    good, bad = 0, top + 1  # good: proved; bad: not proved (or past the question)
    while bad - good > 1:
        ks = sorted({round(good + (bad - good) * (i + 1) / (points + 1)) for i in range(points)} - {good, bad})
        ok = proves(ks)
        first_bad = int((~ok).nonzero()[0]) if not bool(ok.all()) else len(ks)
        good = ks[first_bad - 1] if first_bad > 0 else good
        bad = ks[first_bad] if first_bad < len(ks) else bad
    if method != "bab" or good >= top or time_limit <= 0 or not splits_neurons(engine):
        return float(good)  # (input splitting would prove the L0 ball's box: the whole domain)
    started = time.perf_counter()

    def bab_proves(k: int, seconds: float) -> bool:
        return bab_whole(engine, x0, C, threshold, float(k), lower, upper, free=mask, model_eps=model_eps,
                         time_limit=seconds, offsets=offsets, groups=groups, found=None, norm="l0") >= k

    if bab_proves(top, WHOLE_SHARE * time_limit):  # the question first, then count up from alpha-CROWN's
        return float(top)
    for k in range(good + 1, top):
        left = time_limit - (time.perf_counter() - started)
        if left <= 0.05 or not bab_proves(k, left / 2):
            break
        good = k
    return float(good)


def l0_box(x0, lower, upper, mask):
    """The box of an L0 ball around the flat centre x0: the whole domain in the ``mask``
    dimensions (any of them may go anywhere), the centre elsewhere."""
    keep = mask > 0
    return torch.where(keep, lower, x0), torch.where(keep, upper, x0)


def ball_box(x0, r, lower, upper, mask):
    """The box of radius r around the flat centre x0 (only the ``mask`` dimensions move), cut to
    [lower, upper] (and always holding x0): it holds every ball of radius r there."""
    lo = torch.minimum(torch.maximum(x0 - r * mask, lower), x0)
    hi = torch.maximum(torch.minimum(x0 + r * mask, upper), x0)
    return lo, hi


# bab without a known violation: the share of the time that goes to the whole ball before the bisection
WHOLE_SHARE = 0.5


def splits_neurons(engine: BoundEngine) -> bool:
    """Whether branch and bound splits neurons on this graph (``bab.verify``'s automatic mode:
    ReLUs, past INPUT_SPLIT_DIMS input dimensions), the mode that proves L1/L2 balls."""
    from nnspec.bounds.bab.driver import INPUT_SPLIT_DIMS

    return numel(engine.graph.input_shape) > INPUT_SPLIT_DIMS and \
        any(op.kind in ("relu", "leaky_relu") for op in engine.ops)


def _bab_radius(engine: BoundEngine, x0, C, threshold, radius, lower, upper, *, free, model_eps, time_limit,
                known_upper, offsets=None, groups=None, whole=False, found=None, tolerance: float = 1e-3,
                norm: str | None = None) -> float:
    """``norm`` l1 | l2: every step proves that ball (cut to its box) by ReLU splitting."""
    from nnspec.bounds.bab import verify

    started = time.perf_counter()
    if whole and known_upper is None:  # a box region: the question is the whole box, with all the time
        return bab_whole(engine, x0, C, threshold, radius, lower, upper, free=free, model_eps=model_eps,
                         time_limit=time_limit, offsets=offsets, groups=groups, found=found)
    good = certified_radius(engine, x0, C, threshold, radius, lower, upper, method="crown", free=free,
                            model_eps=model_eps, offsets=offsets, groups=groups, norm=norm)
    if good >= radius:
        return radius
    # no violation seen in the ball: the ball itself first (the property's question; the
    # bisection's steps approach ``radius`` but never try it, so the ball was never proved unless
    # CROWN alone did), then the bisection with the time left
    if known_upper is None and bab_whole(engine, x0, C, threshold, radius, lower, upper, free=free,
                                         model_eps=model_eps, time_limit=WHOLE_SHARE * time_limit,
                                         offsets=offsets, groups=groups, found=found, norm=norm) >= radius:
        return radius
    bad = radius if known_upper is None else min(radius, known_upper)
    x0, lower, upper, mask, slack = _flat_with_slack(engine, x0, C, lower, upper, free, model_eps, offsets, groups)
    while bad - good > tolerance * max(good, 1e-12):
        left = time_limit - (time.perf_counter() - started)
        if left <= 0.05:
            break
        mid = good + (bad - good) / 2
        lo, hi = ball_box(x0, mid, lower, upper, mask)
        result = verify(engine, lo, hi, C, threshold, time_limit=left / 2, slack=slack, offsets=offsets,
                        groups=groups, ball=_ball(norm, x0, mid))
        if result.proven:
            good = mid
        else:
            bad = mid
    return good


def bab_whole(engine: BoundEngine, x0, C, threshold, radius, lower, upper, *, free, model_eps, time_limit,
              offsets, groups, found, norm: str | None = None) -> float:
    """``radius`` when branch and bound proves the whole box (the ball of ``radius`` cut to
    [lower, upper]; ``norm`` l1 | l2: that ball, where it splits ReLUs, else its box) within the
    time, else 0 (no radius is certified: the time went to the region). ``found`` (boxes only)
    collects candidate counterexamples."""
    from nnspec.bounds.bab import verify

    x0, lower, upper, mask, slack = _flat_with_slack(engine, x0, C, lower, upper, free, model_eps, offsets, groups)
    lo, hi = l0_box(x0, lower, upper, mask) if norm == "l0" else ball_box(x0, radius, lower, upper, mask)
    ball = _ball(norm, x0, radius)
    result = verify(engine, lo, hi, C, threshold, time_limit=time_limit, slack=slack, offsets=offsets,
                    groups=groups, found=None if ball is not None else found, ball=ball)
    return radius if result.proven else 0.0


def _ball(norm: str | None, x0: torch.Tensor, r: float) -> Ball | None:
    """The L1/L2/L0 ball of radius r around the flat centre x0 for ``bab.verify`` (None: a box)."""
    if norm is None:
        return None
    return Ball(norm, x0.reshape(1, -1), torch.tensor([float(r)], dtype=torch.float64))


def _flat_with_slack(engine: BoundEngine, x0, C, lower, upper, free, model_eps, offsets, groups):
    """Flat float64 centre, domain and mask, and the float32 guard: 64 eps (1 + |objective at the
    centre|), the same as the bisection's."""
    x0 = x0.double().reshape(-1)
    lower, upper = lower.double().reshape(-1).expand_as(x0), upper.double().reshape(-1).expand_as(x0)
    mask = torch.ones_like(x0) if free is None else free.double().reshape(-1)
    shape = (1,) + tuple(engine.graph.input_shape)
    lo, hi = ball_box(x0, 0.0, lower, upper, mask)
    centre = float(reduce_rows(engine.bound(lo.reshape(shape), hi.reshape(shape), C[None].double()), offsets,
                               groups)[0])
    return x0, lower, upper, mask, 64 * model_eps * (1.0 + abs(centre))
