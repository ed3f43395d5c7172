"""``verify``: branch and bound on one box, from the root's setting (alpha-CROWN, pruning, the
refinement, the facets) through each group's search, in processes where the cores allow, to the
MILP stage and back."""

from __future__ import annotations

import math
import os
import pickle
import time
from contextlib import closing

import torch

from nnspec.bounds import hull
from nnspec.bounds.bab import best_first, beta, milp_stage
from nnspec.bounds.bab.best_first import MAX_DOMAINS
from nnspec.bounds.bab.domains import BabResult, _merged_open, _pack_open, _unpack_open
from nnspec.bounds.engine import BoundEngine
from nnspec.bounds.radius import group_max, reduce_rows
from nnspec.solvers import forked

INPUT_SPLIT_DIMS = 16  # mode auto: input splitting up to this many input dimensions, neuron splitting past it
ROOT_SHARE = 0.3  # of the time limit at most, for the root's alpha-CROWN
# hull facets (``beta._Fixed.with_facets``) on dense chains, for searches of at least FACET_MIN_TIME
# seconds: an LP per group when its search first starts (with at least FACET_MIN_TIME seconds
# left), then hull.FACET_STEPS steps of the slopes and mix, all within FACET_SHARE of the time
# then left. Until 2026-12-05 (sixteenth session) the deadline was FACET_SHARE of the whole time
# limit, so the groups that started later had none: on mnist_fc 256x4 prop_7 eps 0.05 (236 s)
# five of nine groups started after 63 s, and their searches took 14-114 s where they take 7-15 s
# with facets (groups 1 and 2 without them: not proved in 60 s, -0.007 and -0.038)
FACET_MIN_TIME = 20.0
# and for searches of at least REFINE_MIN_TIME seconds, the intermediate bounds tightened first
# (``beta._Fixed.refined``) within REFINE_SHARE of the time limit. mnist_fc 256x4 prop_0 eps 0.05: unstable
# neurons per layer [45, 86, 5, 67] -> [45, 66, 1, 55] in 28 s on one core, the worst row's root bound
# -2.21 -> -1.49 (-1.06 with facets), and its MILP proved in 15 s (134 s on the unrefined bounds)
REFINE_MIN_TIME = 60.0
REFINE_SHARE = 0.25
FACET_SHARE = 0.3
# the complete MILP stage (``_dense_chain``): dense chains of affine layers and ReLUs with at most
# MILP_UNSTABLE neurons that the root's bounds leave unstable get branch and bound for MILP_AFTER of
# the time, at least MILP_AFTER_MIN seconds (a shorter time limit: all of it, no MILP) and at most
# MILP_AFTER_MAX, then a feasibility MILP per group not yet proved (``solvers.milp.find_violation``).
# mnist_fc 256x2 prop_10 eps 0.05 (60 unstable): branch and bound's bound stayed at -1.1 after
# 890,000 subdomains in 120 s; HiGHS decides each of its 9 groups in 2-5 s
MILP_UNSTABLE = 400
# groups searched at once in processes only for searches of at least this many seconds: a radius
# bisection's short steps prove most groups at their roots, and forking a process per group cost
# benchmark 9's branch and bound 2.59 s per point against 1.75 s in one process
GROUPS_AT_ONCE_MIN_TIME = 10.0
MILP_AFTER = 0.4
# and at most this many seconds: on mnist_fc 256x4 prop_11 eps 0.05 (300 s) the MILP needs ~150 s
# after the root; with 40% of the runner's 232 s branch and bound left it 139 s and it timed out
MILP_AFTER_MAX = 30.0
# and at least this many: the searches that branch and bound closes take it a few seconds (mnist_fc
# 256x4 prop_3 eps 0.05 5.3 s, 256x6 prop_7 eps 0.03 6.1 s), while the MILP rarely decides 9 groups
# in less; with 40% of the runner's 10 s both were lost
MILP_AFTER_MIN = 10.0
# then the MILP stage gets at most MILP_SHARE of the time left, each group's MILP at most
# milp_stage.MILP_GROUP_TIME seconds, and the groups it leaves open go back to branch and bound until the time
# limit (since 2026-12-05, when branch and bound stopped stalling: mnist_fc 256x4 prop_13 eps 0.05
# needs ~190 s of it on one core, and the MILP stage did not prove it in the 240 s it held; 256x2
# prop_10 eps 0.05's nine MILPs take 2-5 s each, its search more than 90 s; 256x4 prop_7's rows take
# HiGHS 22-165 s each)
MILP_SHARE = 0.3
# a group's search in a process splits its open subdomains for the workers left idle (no group
# left to start) once it has run SPLIT_AFTER seconds (a search that ends sooner keeps them) and
# while at least SPLIT_MIN_LEFT seconds are left
SPLIT_AFTER = 5.0
SPLIT_MIN_LEFT = 10.0
# a network whose only nonlinearities are smooth (sigmoid, tanh, softplus, ELU), on more than 16
# inputs: input splitting first, for this share of the time, then neuron splitting (halving) for
# the rest. Each proves what the other does not in seconds: halving two-layer tanh MLPs on 30-60
# inputs in 0.1-0.4 s where input splitting proved 6/9 in 10 s; input splitting the image sweep's
# sigmoid/tanh CNNs on 36 inputs in 0.3-5.5 s (a disjunct's rows bounded jointly) where halving
# proved none of five in 60 s (docs/benchmarks.md, benchmark 9)
SMOOTH_INPUT_SHARE = 0.5


def _input_then_halving(engine: BoundEngine, lo, hi, C, threshold, *, time_limit, max_domains, **options) -> BabResult:
    """``verify`` on a network with only smooth nonlinearities: input splitting for
    SMOOTH_INPUT_SHARE of the time, then neuron splitting for the rest. Both bound the same
    quantity on the same box, so the better of their bounds holds."""
    started = time.perf_counter()
    first = verify(engine, lo, hi, C, threshold, time_limit=SMOOTH_INPUT_SHARE * time_limit, mode="input",
                   max_domains=max_domains, **options)
    if first.proven or first.stop in ("counterexample", "domains"):
        return first
    rest = verify(engine, lo, hi, C, threshold, time_limit=max(0.0, time_limit - (time.perf_counter() - started)),
                  mode="relu", max_domains=max_domains - first.domains, **options)
    return BabResult(rest.proven, max(first.lower, rest.lower), first.domains + rest.domains,
                     time.perf_counter() - started, rest.stop, rest.open)


def verify(engine: BoundEngine, lo: torch.Tensor, hi: torch.Tensor, C: torch.Tensor, threshold: float = 0.0, *,
           time_limit: float = 10.0, mode: str = "auto", batch: int | None = None, max_domains: int = MAX_DOMAINS,
           slack: float = 0.0, offsets: torch.Tensor | None = None, groups: torch.Tensor | None = None,
           found: list | None = None, milp: bool = True, milp_workers: int | None = None,
           ball=None) -> BabResult:
    """Prove min over rows of C @ y(x) > threshold + slack for every x in [lo, hi] (one box,
    ``lo``/``hi`` shaped like one input; ``C`` (S, m)), or give the best proved lower bound of
    min_rows(C @ y) - threshold when time or the domain limit runs out. With ``offsets`` and
    ``groups`` the objective is min over groups of max over a group's rows of C @ y + offset
    (an output formula's violation disjuncts, each refuted by any one of its atoms).

    ``mode``: "input" (input splitting), "relu" (neuron splitting: ReLU splits and smooth
    neurons' halvings) or "auto": input splitting up to 16 input dimensions, neuron splitting
    beyond, and on a network without ReLUs but with smooth neurons both, input splitting first
    (``_input_then_halving``).

    ``found``: with input splitting, each new subdomain's most promising points (the vertex that
    minimises the deciding row's linear bound, and the midpoint) are evaluated exactly (float64); a
    point where the objective is <= 0 is appended to ``found`` and the search stops: a candidate
    counterexample, for the caller to confirm on the model.

    ``milp``: on a dense chain of affine layers and ReLUs with few unstable neurons (``milp_stage._dense_chain``)
    and a time limit past MILP_AFTER_MIN, ReLU splitting gets MILP_AFTER of the time (between
    MILP_AFTER_MIN and MILP_AFTER_MAX seconds) and a complete MILP the groups it leaves open, for
    MILP_SHARE of the time then left; the groups still open go back to ReLU splitting until the
    time limit. A solver point that violates on the network (float64) goes to ``found`` like the
    probes'.
    ``milp_workers``: processes at once, one thread each: the groups' ReLU-splitting searches
    (``searches`` in the body; time limits of GROUPS_AT_ONCE_MIN_TIME and more), their MILPs,
    and the refinement's LPs; by default torch's thread
    count, which the executor sets to the cores per task. One: everything in this process.

    ``ball`` (``nnspec.bounds.balls.Ball``, one centre): the region is that L1/L2 ball cut to the
    box. ReLU splitting minimises every subdomain's bound over it; what works on boxes only (input
    splitting, the LP refinement, the hull facets, the MILP stage, the dense chains' own pass) is
    left out, except input splitting, which then proves the box (it holds the ball)."""
    started = time.perf_counter()
    shape = tuple(engine.graph.input_shape)
    lo, hi = lo.double().reshape(shape), hi.double().reshape(shape)
    C = C.double()
    relus = [op for op in engine.ops if op.kind in ("relu", "leaky_relu")]
    if mode == "auto" and lo.numel() > INPUT_SPLIT_DIMS and not relus and engine.halvable:
        return _input_then_halving(engine, lo, hi, C, threshold, time_limit=time_limit, batch=batch,
                                   max_domains=max_domains, slack=slack, offsets=offsets, groups=groups, found=found,
                                   milp=milp, milp_workers=milp_workers)
    if mode == "auto":
        mode = "input" if lo.numel() <= INPUT_SPLIT_DIMS else "relu"
    if mode == "relu" and not relus and not engine.halvable:
        mode = "input"
    if ball is not None and mode == "relu":
        milp = False
    else:
        ball = None
    goal = threshold + slack
    rows = (offsets, groups)
    if batch is None:  # parents split per step; ReLU splitting's subdomains are cheap (see beta._Fixed)
        batch = 128 if mode == "relu" else 64
    if mode != "relu":
        return best_first._search(engine, lo, hi, C, threshold, goal, rows, mode, None, started, time_limit,
                                  batch, max_domains, found)
    # beta-CROWN: alpha-CROWN's bounds at the root, fixed for every subdomain (see beta._Fixed)
    fixed = beta._Fixed.at_root(engine, lo, hi, C, started + ROOT_SHARE * time_limit, ball=ball)
    original = engine  # the MILP stage checks its points on the network as given, not the pruned one
    pruned = beta._pruned(engine, fixed, lo, hi)
    if pruned is not None:
        engine, fixed, lo, hi = pruned
    if time_limit >= REFINE_MIN_TIME and ball is None:  # long searches on dense chains: tighter intermediate bounds first
        fixed = fixed.refined(engine, lo, hi, C, started + REFINE_SHARE * time_limit,
                              torch.get_num_threads() if milp_workers is None else milp_workers)
    # a dense chain with few unstable neurons: what branch and bound leaves open goes to a MILP,
    # when the time goes past branch and bound's floor (a radius bisection's steps never do)
    # (its layers and root bounds also decide the subdomains with every neuron split: ``milp_stage._leaf``)
    leaves = milp_stage._dense_chain(engine, fixed) if milp else None
    chain = leaves[:2] if leaves is not None and time_limit > MILP_AFTER_MIN and \
        milp_stage._unstable(engine, fixed) <= MILP_UNSTABLE else None
    bab_limit = time_limit if chain is None else \
        max(min(MILP_AFTER * time_limit, MILP_AFTER_MAX), MILP_AFTER_MIN)
    facets = hull.FACET_STEPS > 0 and time_limit >= FACET_MIN_TIME and ball is None
    parts, root_values = _parts(fixed.lower, offsets, groups)
    # min over groups > goal iff every group's value is: each group gets a search of its own (one
    # row per subdomain instead of all, each split chosen for that group). In one process the
    # group with the lowest root bound goes first, so a group that cannot be proved ends the
    # search before the time goes to the easy ones; with several workers that many groups are
    # searched at once, one core each (mnist_fc's robustness properties have nine)
    seen = 0
    workers = torch.get_num_threads() if milp_workers is None else milp_workers
    at_once = workers if time_limit >= GROUPS_AT_ONCE_MIN_TIME else 1  # groups searched at once
    home = os.getpid()
    prepared: dict = {}  # a group's setting, kept for a search that resumes (its warm starts fit it)
    # a group's search stopped by its time: its open subdomains (a heap here, ``_pack_open``'s
    # tensors from a process), where its next search resumes
    opened: dict[int, object] = {}

    def search(idx, limit, resume=None, split=None):
        sub_groups = None if groups is None else torch.unique(groups[idx], return_inverse=True)[1]
        sub_rows = (None if offsets is None else offsets[idx], sub_groups)
        key = tuple(idx.tolist())
        if key not in prepared:
            prepared[key] = fixed if len(parts) == 1 else fixed.rows(idx)
            # its facets when its search first starts, with FACET_SHARE of the time left (a
            # group that starts late, after others' searches or the MILP stage, needs them as
            # much as the first: see FACET_MIN_TIME)
            left = started + time_limit - time.perf_counter()
            # (not for a group that its root bound proves: its search ends there)
            if facets and left >= FACET_MIN_TIME and \
                    float(reduce_rows(prepared[key].lower[None], *sub_rows)[0]) <= goal:
                prepared[key] = prepared[key].with_facets(engine, lo, hi, C[idx], sub_rows[0],
                                                          time.perf_counter() + FACET_SHARE * left)
        sub_fixed = prepared[key]
        leaf = None if leaves is None else \
            (lambda dom: milp_stage._leaf(original, shape, leaves, dom, C[idx], sub_rows[0], threshold, goal, found))
        return best_first._search(engine, lo, hi, C[idx], threshold, goal, sub_rows, mode, sub_fixed, started,
                                  limit, batch, max_domains - seen, found, resume, leaf, split)

    def in_process(j, pack, limit, _left):  # a piece of a group's search in a forked process, one thread
        if os.getpid() != home:  # (``forked`` runs it here where it cannot fork)
            torch.set_num_threads(1)
        before = 0 if found is None else len(found)
        began = time.perf_counter()

        def split(open_domains: int) -> int:  # the parts to hand back, when workers are idle (0: go on)
            now = time.perf_counter()
            if now - began < SPLIT_AFTER or started + limit - now < SPLIT_MIN_LEFT:
                return 0
            taken = forked.claim_idle(min(open_domains, at_once) - 1)
            return 1 + taken if taken else 0

        result = search(parts[j], limit, None if pack is None else _unpack_open(pack, lo, hi), split)
        # pickled here: the pipe's own pickler would share the tensors' memory through handles
        # that die with this process; the open subdomains go as a few large tensors, and the
        # counterexamples its leaves' LPs found (``milp_stage._leaf``) with them. A search that ran to the
        # time limit is not resumed: its setting and open subdomains stay here (a CNN's took
        # longer to pickle than the parent waits past the deadline, and its result was lost).
        # A search that split hands back its parts (a list of heaps), each to be resumed.
        heaps = result.open if result.stop == "split" else None if limit >= time_limit else [result.open]
        return pickle.dumps((BabResult(result.proven, result.lower, result.domains, result.seconds, result.stop),
                             None if heaps is None else prepared[tuple(parts[j].tolist())],
                             None if heaps is None else [p for p in (_pack_open(h, lo, hi) for h in heaps) if p],
                             [] if found is None or os.getpid() == home else found[before:]))

    def searches(todo: list[int], limit: float):
        """(group, its search's result) for the groups ``todo`` (positions in ``parts``), each
        search until ``started + limit`` and resuming where it stopped before (``opened``): in
        order in this process, or with several workers that many at once in forked processes,
        one thread each, results as they come (a search that the machine killed reads as a
        time-out at the group's root bound). In processes a search that finds workers idle
        (no group left to start) splits its open subdomains into parts (SPLIT_AFTER), each then
        a search of its own: the group's result comes once all its parts have ended, proved
        when each is, with the least of their bounds. Closing it stops the others."""
        if at_once <= 1:
            for j in todo:
                resume = opened.pop(j, None)
                result = search(parts[j], limit, None if resume is None else _merged_open(resume, lo, hi))
                if result.open:
                    opened[j] = [result.open]
                yield j, result
            return
        # one problem per part of a group's search: a group not searched yet is one part
        problems = [(j, pack, limit) for j in todo for pack in (opened.pop(j, None) or [None])]
        pending = {j: sum(1 for p in problems if p[0] == j) for j in todo}
        merged = {j: BabResult(True, math.inf, 0, 0.0, "proven") for j in todo}
        with closing(forked.solve_all(in_process, problems, started + limit, at_once, share_idle=True)) as results:
            for k, got in results:
                j = problems[k][0]
                problems[k] = (j, None, limit)  # its subdomains are not needed here again
                pending[j] -= 1
                if got is None:
                    result, setting, packs, points = \
                        BabResult(False, float(root_values[j]) - threshold, 0, 0.0, "time"), None, None, []
                else:
                    result, setting, packs, points = pickle.loads(got)
                if setting is not None:
                    prepared[tuple(parts[j].tolist())] = setting
                if found is not None:  # (the points a process found; none where it ran here)
                    found.extend(points)
                if result.stop == "counterexample":
                    yield j, result
                    continue
                if result.stop == "split":  # its parts go on as searches of their own
                    problems.extend((j, pack, limit) for pack in packs)
                    pending[j] += len(packs)
                    result = BabResult(True, math.inf, result.domains, result.seconds, "proven")
                elif packs:
                    opened.setdefault(j, []).extend(packs)
                so_far = merged[j]
                merged[j] = BabResult(so_far.proven and result.proven, min(so_far.lower, result.lower),
                                      so_far.domains + result.domains, max(so_far.seconds, result.seconds),
                                      so_far.stop if not so_far.proven else result.stop)
                if not pending[j]:
                    yield j, merged[j]

    # per group: proved or not, and its best proved lower bound (at first its root's); the
    # result's bound is the least of them
    proved = [False] * len(parts)
    best = [float(v) - threshold for v in root_values]

    def ended(stop: str) -> BabResult:
        return BabResult(stop == "proven", min(best), seen, time.perf_counter() - started, stop)

    def take(j: int, result: BabResult) -> bool:
        nonlocal seen
        seen += result.domains
        if result.proven:
            proved[j], best[j] = True, result.lower
            prepared.pop(tuple(parts[j].tolist()), None)  # its facets (a CNN's: tens of MB) are not needed again
        else:
            best[j] = result.lower if result.stop == "counterexample" else max(best[j], result.lower)
        return result.proven

    # the first pass: each group's branch and bound until bab_limit. In this process a group that
    # is not proved ends the pass (the groups not searched keep their root bounds); in processes
    # the others run on, for the MILP stage to take every group left open
    with closing(searches(list(range(len(parts))), bab_limit)) as results:
        for j, result in results:
            if take(j, result):
                continue
            if chain is None or result.stop == "counterexample":
                return ended(result.stop)
            if at_once <= 1:
                break
    if all(proved):
        return ended("proven")
    if chain is None:  # processes' results missing: their groups stay open
        return ended("time")
    # the groups not proved yet, each proved by the MILP within its share of what is left
    # (MILP_SHARE), the rest back to branch and bound until the time limit
    left = [j for j in range(len(parts)) if not proved[j]]
    now = time.perf_counter()
    ends = milp_stage._milp_groups(original, shape, chain, lo, hi, C, offsets, [parts[j] for j in left], threshold,
                                   goal, now + MILP_SHARE * (started + time_limit - now), found, workers)
    for j, ok in zip(left, [True] * len(left) if ends is None else ends[0]):
        if ok:
            proved[j], best[j] = True, goal - threshold
            opened.pop(j, None)
    if ends is not None and ends[1] == "counterexample":
        return ended("counterexample")
    left = [j for j in left if not proved[j]]
    with closing(searches(left, time_limit)) as results:  # the interrupted searches resume
        for j, again in results:
            if not take(j, again):
                return ended(again.stop)
    return ended("proven" if all(proved) else "time")


def _parts(lower: torch.Tensor, offsets, groups) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The row indices of each group (each row is its own group without ``groups``), the group
    with the lowest root bound first, and those root bounds in the same order."""
    S = lower.shape[-1]
    groups = torch.arange(S) if groups is None else groups.view(-1)
    values = lower.view(1, S) + (0 if offsets is None else offsets.to(lower).view(1, S))
    per_group = group_max(values, groups)[0]
    order = [g for g in per_group.argsort().tolist() if bool((groups == g).any())]  # numbers with no rows: none
    return [(groups == g).nonzero().flatten() for g in order], per_group[order]
