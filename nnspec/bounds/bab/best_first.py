"""One best-first branch-and-bound search from a box (``_search``): the lowest open subdomains
split a batch at a time, ReLU splits or input cuts, until every one is proved, a counterexample
is found, or the time or the subdomains run out."""

from __future__ import annotations

import heapq
import itertools
import math
import time

import torch

from nnspec.bounds.bab import beta, inputs
from nnspec.bounds.bab.domains import BabResult, _dealt, _Domain, _split_input, _split_input_all, _split_neuron
from nnspec.bounds.engine import BoundEngine
from nnspec.bounds.relax import numel

# subdomains bounded at most per call: a guard on memory, not a budget (the time limit is). With
# 200,000, mnist_fc 256x4's searches (5,000 subdomains per second once pruned) stopped after 40 s of
# a 300 s timeout; 561,000 subdomains took 1.0 GB of memory there
MAX_DOMAINS = 2_000_000
WARM_LIMIT = 50_000  # input splitting: open boxes beyond which children start from CROWN's slopes
SMART_DIMS = 8  # input splitting: at most this many free dimensions, every cut is tried (see _best_cuts)
DIVE_SHARE = 0.25  # input splitting with probes: the share of each batch taken by lowest probe value
PRIOR_LIMIT = 4096  # neurons: above this, parents' bounds are not kept with the subdomains


def _search(engine: BoundEngine, lo, hi, C, threshold: float, goal: float, rows, mode: str,
            fixed: "beta._Fixed | None", started: float, time_limit: float, batch: int, max_domains: int,
            found: list | None, resume: list | None = None, leaf=None, split=None) -> BabResult:
    """Best-first branch and bound from the box [lo, hi] (see ``verify``); with ``resume`` (ReLU
    splitting: a search's ``open`` subdomains) from where that search stopped. ``leaf`` (ReLU
    splitting): decides a subdomain with no neuron left to split (``_leaf``: "proven",
    "counterexample" or None, when the box is cut instead). ``split`` (ReLU splitting): asked
    before each batch with the number of open subdomains, the number of parts (>= 2) to divide
    them into now, or 0; the search then stops with stop "split" and ``open`` the parts' heaps
    (``_dealt``)."""
    counter = itertools.count()
    # input splitting in few dimensions: every dimension's cut is bounded and the best kept
    smart = mode == "input" and int(((hi - lo) > 0).sum()) <= SMART_DIMS
    root_width = (hi - lo).flatten()
    reuse = mode == "input" and sum(numel(engine.by_name[n].shape) for n in engine.preact) <= PRIOR_LIMIT
    bound = (lambda doms: beta._bound_fixed(engine, doms, C, rows, fixed, goal)) if fixed is not None else \
        (lambda doms: inputs._bound_reusing(engine, doms, C, rows, goal))
    heap: list[tuple[float, int, _Domain, dict]] = []
    if resume:
        heap, counter, seen = resume, itertools.count(max(e[1] for e in resume) + 1), 0
    else:
        root = _Domain(lo, hi, {}, 0.0)
        bounds, records, empty = bound([root])
        root_bound = float(bounds[0]) - threshold
        seen = 1
        if empty[0] or float(bounds[0]) > goal:
            return BabResult(True, root_bound if not empty[0] else math.inf, seen, time.perf_counter() - started,
                             "proven")
        root.bound = float(bounds[0])
        if fixed is not None:
            root.warm, root.branch = fixed.warm_start(records["warm"], 0, 0), records["branch"][0]
        heapq.heappush(heap, (root.bound, next(counter), root, {} if fixed is not None else
                              {k: v[0] for k, v in records.items()}))
    # input splitting with probes: besides the lowest bounds (the proof's order), a share of each
    # batch goes to the boxes whose probes came closest to a violation (a dive toward it); both
    # heaps hold the same boxes, a box taken from one is skipped in the other
    dive: list[tuple[float, int]] | None = [] if found is not None and mode == "input" and DIVE_SHARE > 0 else None
    taken: set[int] = set()
    alive: dict[int, tuple] = {}  # the dive's boxes by counter

    def pop(queue):
        while queue:
            entry = heapq.heappop(queue)
            if entry[1] not in taken:
                taken.add(entry[1])
                return entry
        return None

    while heap:
        while heap and heap[0][1] in taken:
            heapq.heappop(heap)
        if not heap:
            break
        if time.perf_counter() - started > time_limit:
            return BabResult(False, heap[0][0] - threshold, seen, time.perf_counter() - started, "time",
                             heap if fixed is not None and dive is None else None)
        if seen >= max_domains:
            return BabResult(False, heap[0][0] - threshold, seen, time.perf_counter() - started, "domains")
        if split is not None and fixed is not None and dive is None and len(heap) >= 2:
            k = split(len(heap))
            if k >= 2:
                return BabResult(False, heap[0][0] - threshold, seen, time.perf_counter() - started, "split",
                                 _dealt(heap, k))
        n_dive = 0 if dive is None else int(batch * DIVE_SHARE)
        entries = [pop(heap) for _ in range(batch - n_dive)] + [pop(dive) for _ in range(n_dive)]
        parents = [e if len(e) == 4 else alive.pop(e[1]) for e in entries if e is not None]
        for e in parents:
            alive.pop(e[1], None)
        children: list[_Domain] = []
        owners: list[int] = []  # per child: its parent's position in ``parents``
        cut_width: list[float] = []  # smart cuts, per child: the cut dimension's width / the root box's
        for p, (_, _, dom, rec) in enumerate(parents):
            kids = _split_neuron(engine, dom) if mode == "relu" else None
            if kids is None and leaf is not None:  # the network is affine on it: one LP decides it
                verdict = leaf(dom)
                if verdict == "proven":
                    continue
                if verdict == "counterexample":
                    return BabResult(False, -math.inf, seen, time.perf_counter() - started, "counterexample")
            if kids is None:  # no unstable neuron left (or input mode): cut the box
                if smart:
                    kids, rel = _split_input_all(dom, root_width)
                    cut_width.extend(rel)
                else:
                    kids = _split_input(dom, rec)
                if reuse:  # a child box lies inside its parent's: the parent's bounds hold on it
                    prior = {n[len("bounds:"):]: (v[0], v[1]) for n, v in rec.items() if n.startswith("bounds:")}
                    for kid in kids:
                        kid.prior, kid.depth = prior, dom.depth + 1
            children.extend(kids)
            owners.extend([p] * len(kids))
        if not children:  # every parent of the batch closed by its LP
            continue
        bounds, records, empty = bound(children)
        seen += len(children)
        # a child lies inside its parent: the parent's bound holds on it too
        bounds = torch.maximum(bounds, torch.tensor([parents[p][2].bound for p in owners], dtype=bounds.dtype))
        if smart:
            keep = inputs._best_cuts(owners, bounds, empty, goal, cut_width, [parents[p][2].bound for p in owners[::2]])
            children = [children[i] for i in keep]
            bounds, empty = bounds[keep], empty[keep]
            records = {k: v[keep] for k, v in records.items()}
            owners = [owners[i] for i in keep]
        probed = None
        if found is not None and mode == "input":
            hit, probed = inputs._probe(engine, children, records, C, rows, threshold=threshold)
            if hit is not None:
                found.append(hit)
                return BabResult(False, -math.inf, seen, time.perf_counter() - started, "counterexample")
        for i, child in enumerate(children):
            b = float(bounds[i])
            if empty[i] or b > goal:
                continue
            child.bound = b
            if fixed is not None:
                child.warm, child.branch = fixed.warm_start(records["warm"], i, len(heap)), records["branch"][i]
            elif mode == "input" and (len(heap) if dive is None else len(alive)) < WARM_LIMIT:  # its final slopes
                child.alphas = {k[len("alpha:"):]: v[i].float() for k, v in records.items() if k.startswith("alpha:")} \
                    or None
            entry = (b, next(counter), child, {} if fixed is not None else
                     {k: v[i] for k, v in records.items() if not k.startswith("alpha:")})
            heapq.heappush(heap, entry)
            if dive is not None and probed is not None:
                alive[entry[1]] = entry
                heapq.heappush(dive, (float(probed[i]), entry[1]))
    return BabResult(True, goal - threshold, seen, time.perf_counter() - started, "proven")
