"""HiGHS inside branch and bound, on dense chains of affine layers and ReLUs: a complete MILP
for each group that the searches leave open (``_milp_groups``, several at once in processes),
and one LP for a subdomain with no neuron left to split (``_leaf``)."""

from __future__ import annotations

from contextlib import closing
from typing import TYPE_CHECKING

import numpy as np
import torch

from nnspec.bounds.bab.domains import _Domain
from nnspec.bounds.engine import BoundEngine
from nnspec.solvers import forked

if TYPE_CHECKING:
    from nnspec.bounds.bab.beta import _Fixed

MILP_GROUP_TIME = 8.0  # seconds at most for each group's MILP (see driver.MILP_SHARE)
MILP_GUARD = 1e-5  # the MILP looks for rows <= goal + this: room for HiGHS's 1e-7 feasibility tolerances
MILP_MAX_WEIGHTS = 4_000_000  # nonzero weights of the composed dense layers


def _unstable(engine: BoundEngine, fixed: "_Fixed") -> int:
    """The ReLUs' neurons that the root's bounds leave unstable (the MILP stage's size)."""
    return sum(int(((fixed.bounds[op.inputs[0]][0] < 0) & (fixed.bounds[op.inputs[0]][1] > 0)).sum())
               for op in engine.ops if op.kind == "relu" and op.inputs[0] in fixed.bounds)


def _dense_chain(engine: BoundEngine, fixed: "_Fixed"):
    """(layers, pre-activation bounds, the ReLU inputs' names) of the network as a chain of
    dense affine maps and ReLUs, with the root's bounds, or None (another graph, or more than
    MILP_MAX_WEIGHTS weights): what the MILP stage (with at most MILP_UNSTABLE neurons
    unstable) and the leaves' LPs (``_leaf``) solve."""
    from nnspec.bounds.exact import chain_layers
    from nnspec.bounds.graph import Unsupported

    try:
        layers, preacts = chain_layers(engine)
    except Unsupported:
        return None
    if any(p is None or p not in fixed.bounds for p in preacts) or \
            sum(int((w != 0).sum()) for w, _ in layers) > MILP_MAX_WEIGHTS:
        return None
    pre = [(fixed.bounds[p][0].flatten().numpy(), fixed.bounds[p][1].flatten().numpy()) for p in preacts]
    return layers, pre, preacts


def _milp_groups(original: BoundEngine, shape, chain, lo, hi, C, offsets, parts, threshold: float,
                 goal: float, deadline: float, found: list | None, workers: int = 1):
    """The MILP stage over the groups ``parts``, in that order, up to ``workers`` at a time (each
    in a process of its own: HiGHS runs one thread per problem and cannot be stopped from
    outside, a process can): None when every one is proved, else (which were proved, a bool per
    group, and why the stage stopped: ``time`` or ``counterexample``). Each group's MILP gets at
    most MILP_GROUP_TIME seconds; one not decided in it stays open and the others go on. A
    solver point whose objective on the network (float64) is <= threshold is appended to
    ``found`` and stops the stage and the solvers still running; one that is not (the solver's
    tolerances) leaves its group open like a time-out."""
    layers, pre = chain
    box_lo, box_hi = lo.reshape(-1).numpy(), hi.reshape(-1).numpy()
    offs = [(torch.zeros(len(idx), dtype=torch.float64) if offsets is None else offsets[idx].double()).numpy()
            for idx in parts]
    problems = [(layers, pre, box_lo, box_hi, C[idx].numpy(), off, goal + MILP_GUARD) for idx, off in zip(parts, offs)]
    proved = [False] * len(parts)
    with closing(_solve_all(problems, deadline, workers)) as verdicts:  # closing it stops the others
        for k, verdict in verdicts:
            if verdict.status == "proven":
                proved[k] = True
                continue
            if verdict.status == "violation":
                x = torch.from_numpy(verdict.x).reshape(shape)
                with torch.no_grad():
                    y = original.evaluate(x[None]).flatten(1)
                if float(((y @ C[parts[k]].T) + torch.from_numpy(offs[k])).max()) <= threshold:
                    if found is not None:
                        found.append(x)
                    return proved, "counterexample"
            # a time-out (MILP_GROUP_TIME) or a solver point that does not violate on the network:
            # this group stays open, the others go on
    return None if all(proved) else (proved, "time")


def _solve_all(problems: list, deadline: float, workers: int):
    """(index, ``find_violation``'s verdict) for the problems in order, with the time left to the
    deadline each; with ``workers`` > 1 up to that many at once in forked processes
    (``solvers.forked``), verdicts as they come. The caller stops at the first verdict it does
    not want (a generator: the processes still running are killed when it is closed)."""
    from nnspec.solvers.milp import Refutation

    with closing(forked.solve_all(_find_violation, problems, deadline, workers)) as verdicts:
        for k, verdict in verdicts:
            yield k, Refutation("time") if verdict is None else verdict


def _find_violation(*args):
    from nnspec.solvers import milp

    return milp.find_violation(*args[:-1], min(args[-1], MILP_GROUP_TIME))


LEAF_TIME = 2.0  # seconds of HiGHS for a leaf's LP (``_leaf``)


def _leaf(original: BoundEngine, shape, chain, dom: _Domain, C: torch.Tensor, offsets,
          threshold: float, goal: float, found: list | None) -> str | None:
    """A ReLU-splitting subdomain of a dense chain (``_dense_chain``'s layers, root bounds and
    ReLU inputs' names) in which every
    neuron is split or stable, so the network is affine on it: whether some x in its box, in
    its neurons' phases, has every row of C @ y + offsets <= goal (one group), by the MILP
    stage's ``find_violation``, here a plain LP (no binaries). "proven": none, the subdomain is
    closed (as sound as the MILP stage's verdicts: HiGHS's tolerances, MILP_GUARD). A solver
    point that violates on the network (float64) is appended to ``found``: "counterexample".
    None otherwise (the caller cuts the box). Why: the split multipliers that bound such a
    subdomain come from a dozen warm-started steps per split, and on mnist_fc 256x4 prop_7
    eps 0.05 whole lineages split all 153 unstable neurons with their bound stuck at -0.113, the
    LP's +0.988, then cut the 784-dimensional box for the rest of the time."""
    from nnspec.solvers.milp import find_violation

    layers, root_pre, names = chain
    pre = []
    for name, (l, u) in zip(names, root_pre):
        split = dom.splits.get(name)
        if split is not None:
            s = split.flatten().numpy()
            l, u = np.where(s > 0, np.maximum(l, 0.0), l), np.where(s < 0, np.minimum(u, 0.0), u)
        if bool(((l < 0) & (u > 0)).any()):
            return None  # (a neuron is left: not a leaf)
        pre.append((l, u))
    offs = np.zeros(len(C)) if offsets is None else offsets.double().numpy()
    try:
        verdict = find_violation(layers, pre, dom.lo.reshape(-1).numpy(), dom.hi.reshape(-1).numpy(), C.numpy(),
                                 offs, goal + MILP_GUARD, LEAF_TIME, cut_rounds=0)
    except RuntimeError:  # HiGHS could not solve it: the box is cut instead
        return None
    if verdict.status == "proven":
        return "proven"
    if verdict.status == "violation":
        x = torch.from_numpy(verdict.x).reshape(shape)
        with torch.no_grad():
            y = original.evaluate(x[None]).flatten(1)
        if float(((y @ C.T) + torch.from_numpy(offs)).max()) <= threshold:
            if found is not None:
                found.append(x)
            return "counterexample"
    return None
