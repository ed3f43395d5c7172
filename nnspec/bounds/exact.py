"""Exact radii by MILP for networks that are chains of affine maps and ReLUs, read from the graph.

Consecutive affine ops (normalisation, Flatten, Linear, Conv, MatMul, Add, ...) compose to one
affine map, probed exactly: W = f(I) - f(0), b = f(0), so any chain the engine bounds (convolutions
included) becomes [(W, b), ...] for ``nnspec.solvers.milp``. The big-M constants come from CROWN's
pre-activation bounds (far tighter than intervals, so far fewer branches). Exact up to HiGHS's
tolerances; anytime: when the time runs out, the solver's proved lower bound of the distance.
"""

from __future__ import annotations

import numpy as np
import torch

from nnspec.bounds.engine import BoundEngine
from nnspec.bounds.graph import Unsupported, pool_windows
from nnspec.bounds.radius import margin_objectives

MAX_INPUTS = 4096  # dense matrices of the composed layers: at most this many inputs or units per layer


def chain_layers(engine: BoundEngine) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[str | None]]:
    """The affine layers of an affine/ReLU chain, and the names of the ReLUs' inputs (None for
    the ReLUs that encode a max-pool, which have no node of their own).

    A max-pool after a ReLU (its inputs >= 0) is exact as ReLU layers: max(a, b) = relu(b) +
    relu(a - b) for b >= 0, a tournament of pairs per output window (``_maxpool_layers``)."""
    ops = engine.graph.source_ops  # max-pools as the network has them (the engine's own ops decompose them)
    n = int(np.prod(engine.graph.input_shape))
    if n > MAX_INPUTS:
        raise Unsupported(f"exact MILP: {n} inputs is too many for dense layers")
    # each segment: the affine maps between two ReLUs, as ops (probed below) or matrices (W, b)
    segments: list[list] = [[]]
    preacts: list[str | None] = []
    prev = "input"
    for op in ops[1:]:
        if len(op.inputs) != 1 or op.inputs[0] != prev:
            raise Unsupported(f"exact MILP needs a chain of layers; node {op.name} branches")
        if op.kind == "affine":
            segments[-1].append(op)
        elif op.kind == "relu":
            units = int(np.prod(engine.by_name[op.name].shape))
            if units > MAX_INPUTS:  # the next segment's dense matrix is probed with an identity this wide
                raise Unsupported(f"exact MILP: {units} units at {op.name} is too many for dense layers")
            preacts.append(op.inputs[0])
            segments.append([])
        elif op.kind == "maxpool" and preacts and ops[-1] is not op and \
                all(not isinstance(o, tuple) and o.back == "reshape" for o in segments[-1]):
            # after a ReLU (and reshapes, which keep the values): its inputs are >= 0
            tournament = _maxpool_layers(op, engine.by_name[prev].shape)
            for w, b in tournament[:-1]:
                segments[-1].append((w, b))
                preacts.append(None)
                segments.append([])
            segments[-1].append(tournament[-1] + (tuple(engine.by_name[op.name].shape),))
        else:
            raise Unsupported(f"exact MILP covers ReLU networks (and max-pools after a ReLU); node {op.name} "
                              f"is {op.kind}")
        prev = op.name
    if prev != engine.graph.output:
        raise Unsupported("exact MILP: the output is not the end of the chain")
    layers = []
    shape = tuple(engine.graph.input_shape)
    for seg in segments:
        width = int(np.prod(shape))
        with torch.no_grad():
            out = torch.cat([torch.zeros(1, width), torch.eye(width)]).double().reshape((width + 1,) + shape)
            for step in seg:
                if isinstance(step, tuple):  # a matrix: flat in, flat out (or shaped, the tournament's last)
                    w, b = torch.from_numpy(step[0]), torch.from_numpy(step[1])
                    out = out.reshape(width + 1, -1) @ w.T + b
                    if len(step) == 3:
                        out = out.reshape((width + 1,) + step[2])
                else:
                    out = step.fn(out)
        flat = out.reshape(width + 1, -1)
        b = flat[0]
        w = (flat[1:] - b).T
        layers.append((w.numpy(), b.numpy()))
        shape = tuple(out.shape[1:])
    return layers, preacts


def _maxpool_layers(op, in_shape) -> list[tuple[np.ndarray, np.ndarray]]:
    """A max-pool of inputs >= 0 as affine maps with a ReLU between consecutive ones: each
    output's window (``graph.pool_windows``) is reduced pairwise, max(a, b) = relu(b) +
    relu(a - b), an odd one out carried as relu(v) = v. Maps: [(W, b)] flat -> units, units ->
    units, ..., units -> outputs (no ReLU after the last)."""
    n = int(np.prod(in_shape))
    windows = pool_windows(op, tuple(in_shape))
    if any(len(w) == 0 for w in windows):
        raise Unsupported(f"exact MILP: max-pool {op.name} has an output with no input")
    # values: per output, its current candidates as rows of a matrix over the current variables
    values = [[np.eye(1, n, i)[0] for i in w] for w in windows]
    maps = []
    while any(len(v) > 1 for v in values):
        rows, nxt = [], []
        for cand in values:
            mine = []
            for k in range(0, len(cand) - 1, 2):
                a, b = cand[k], cand[k + 1]
                mine.append((len(rows), len(rows) + 1))
                rows += [b, a - b]  # relu(b) + relu(a - b) = max(a, b)
            if len(cand) % 2:
                mine.append((len(rows),))
                rows.append(cand[-1])
            nxt.append(mine)
        maps.append((np.stack(rows), np.zeros(len(rows))))
        m = len(rows)
        values = [[sum(np.eye(1, m, i)[0] for i in pair) for pair in mine] for mine in nxt]
    maps.append((np.stack([v[0] for v in values]), np.zeros(len(values))))
    return maps


def milp_radius(engine: BoundEngine, x0: torch.Tensor, label: int, target: int | None, radius: float,
                lower: torch.Tensor, upper: torch.Tensor, *, threshold: float = 0.0, free: torch.Tensor | None = None,
                time_limit: float = 60.0, norm: str = "linf"):
    """The exact L-inf (or ``norm`` l1) distance to the closest input where the margin over
    ``target`` (any label if None) is at most ``threshold``, within the box of ``radius``: a
    ``MilpResult`` (``lower`` is proved)."""
    from nnspec.solvers.milp import min_distance

    layers, preacts = chain_layers(engine)
    x0 = x0.double().reshape(-1)
    lo, hi = lower.double().reshape(-1).expand_as(x0), upper.double().reshape(-1).expand_as(x0)
    if free is not None:  # dimensions outside the window stay at the centre
        keep = free.reshape(-1) > 0
        lo, hi = torch.where(keep, lo, x0), torch.where(keep, hi, x0)
    shape = (1,) + tuple(engine.graph.input_shape)

    bounder = engine
    if None in preacts:  # ReLUs of the MILP's own (a max-pool's): CROWN over the chain itself bounds them too
        bounder = chain_engine(layers)
        shape = (1, x0.numel())
        preacts = [op.inputs[0] for op in bounder.ops if op.kind == "relu"]

    def pre_bounds(box_lo, box_hi):  # CROWN's bounds of every ReLU's input
        bounds = bounder.intervals(torch.from_numpy(box_lo).reshape(shape), torch.from_numpy(box_hi).reshape(shape))
        return [(bounds[p][0].reshape(-1).numpy(), bounds[p][1].reshape(-1).numpy()) for p in preacts]

    targets = None
    if target is None:  # the labels whose margin CROWN proves above the threshold on the box need no MILP
        n_out = layers[-1][0].shape[0]
        box = (torch.maximum(lo, x0 - radius), torch.minimum(hi, x0 + radius))
        C = margin_objectives(n_out, label)
        low = engine.bound(*(v.reshape((1,) + tuple(engine.graph.input_shape)) for v in box), C[None])[0]
        others = [t for t in range(n_out) if t != label]
        targets = [t for t, v in zip(others, low.tolist()) if v <= threshold]
    return min_distance(layers, x0.numpy(), label, target, norm, lo.numpy(), hi.numpy(), max_radius=radius,
                        slack=-threshold, time_limit=time_limit, anytime=True, pre_bounds=pre_bounds,
                        targets=targets)


def chain_engine(layers: list[tuple[np.ndarray, np.ndarray]]) -> BoundEngine:
    """A bound engine over the affine/ReLU chain itself (dense layers), whose ReLU inputs are the
    MILP's, in order."""
    from torch import nn

    from nnspec.bounds.graph import BoundGraph

    mods: list[nn.Module] = []
    for k, (w, b) in enumerate(layers):
        lin = nn.Linear(w.shape[1], w.shape[0]).double()
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w))
            lin.bias.copy_(torch.from_numpy(b))
        mods.append(lin)
        if k < len(layers) - 1:
            mods.append(nn.ReLU())
    return BoundEngine(BoundGraph.from_module(nn.Sequential(*mods), (layers[0][0].shape[1],)))
