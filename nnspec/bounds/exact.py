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
from nnspec.bounds.graph import Unsupported

MAX_INPUTS = 4096  # dense matrices of the composed layers


def chain_layers(engine: BoundEngine) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[str]]:
    """The affine layers of an affine/ReLU chain, and the names of the ReLUs' inputs."""
    ops = engine.ops
    n = int(np.prod(engine.graph.input_shape))
    if n > MAX_INPUTS:
        raise Unsupported(f"exact MILP: {n} inputs is too many for dense layers")
    segments: list[list] = [[]]
    preacts: list[str] = []
    prev = "input"
    for op in ops[1:]:
        if len(op.inputs) != 1 or op.inputs[0] != prev:
            raise Unsupported(f"exact MILP needs a chain of layers; node {op.name} branches")
        if op.kind == "affine":
            segments[-1].append(op)
        elif op.kind == "relu":
            preacts.append(op.inputs[0])
            segments.append([])
        else:
            raise Unsupported(f"exact MILP covers ReLU networks; node {op.name} is {op.kind}")
        prev = op.name
    if prev != engine.graph.output:
        raise Unsupported("exact MILP: the output is not the end of the chain")
    layers = []
    shape = tuple(engine.graph.input_shape)
    for seg in segments:
        width = int(np.prod(shape))
        with torch.no_grad():
            basis = torch.cat([torch.zeros(1, width), torch.eye(width)]).double().reshape((width + 1,) + shape)
            out = basis
            for op in seg:
                out = op.fn(out)
        flat = out.reshape(width + 1, -1)
        b = flat[0]
        w = (flat[1:] - b).T
        layers.append((w.numpy(), b.numpy()))
        shape = tuple(out.shape[1:])
    return layers, preacts


def milp_radius(engine: BoundEngine, x0: torch.Tensor, label: int, target: int | None, radius: float,
                lower: torch.Tensor, upper: torch.Tensor, *, threshold: float = 0.0, free: torch.Tensor | None = None,
                time_limit: float = 60.0):
    """The exact L-inf distance to the closest input where the margin over ``target`` (any label if
    None) is at most ``threshold``, within ``radius``: a ``MilpResult`` (``lower`` is proved)."""
    from nnspec.solvers.milp import min_distance

    layers, preacts = chain_layers(engine)
    x0 = x0.double().reshape(-1)
    lo, hi = lower.double().reshape(-1).expand_as(x0), upper.double().reshape(-1).expand_as(x0)
    if free is not None:  # dimensions outside the window stay at the centre
        keep = free.reshape(-1) > 0
        lo, hi = torch.where(keep, lo, x0), torch.where(keep, hi, x0)
    shape = (1,) + tuple(engine.graph.input_shape)

    def pre_bounds(box_lo, box_hi):
        bounds = engine.intervals(torch.from_numpy(box_lo).reshape(shape), torch.from_numpy(box_hi).reshape(shape))
        return [(bounds[p][0].reshape(-1).numpy(), bounds[p][1].reshape(-1).numpy()) for p in preacts]

    return min_distance(layers, x0.numpy(), label, target, "linf", lo.numpy(), hi.numpy(), max_radius=radius,
                        slack=-threshold, time_limit=time_limit, anytime=True, pre_bounds=pre_bounds)
