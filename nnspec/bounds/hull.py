"""Upper relaxations of a ReLU from the convex hull of the neuron over its layer's input box.

A neuron y = ReLU(w . x + b) whose input x lies in the box [L, U] has, besides the triangle (a
line in the pre-activation w . x + b between its bounds), the facets of the convex hull of
{(x, y)} over the box (Anderson et al. 2020, "Strong mixed-integer programming formulations for
trained neural networks", Theorem 1). With L'_i, U'_i the ends of [L_i, U_i] where w_i x_i is
least and greatest, l(I) = b + sum_{i in I} w_i L'_i + sum_{i not in I} w_i U'_i, and any subset
I of the inputs and h not in I with l(I) >= 0 > l(I + h):

    y <= sum_{i in I} w_i (x_i - L'_i) + l(I) (x_h - L'_h) / (U'_h - L'_h)

a linear upper bound of y in the layer's inputs x themselves, valid wherever x lies in the box.
The triangle uses the tighter pre-activation bounds, a facet the coupling between the inputs;
CROWN takes a convex combination t * triangle + (1 - t) * facet per neuron (``BoundEngine.backward``
with ``facets`` and ``mix``), any t in [0, 1] sound, and alpha-CROWN optimises t with the slopes.
With the facet chosen at the LP relaxation's minimiser, the bound approaches the LP with every
facet: mnist_fc 256x4 prop_0 eps 0.05, worst row, alpha-CROWN -2.21, the triangle LP -2.20, with
facets -1.41 (the LP with one round of Anderson cuts: -1.40).

``facets_at`` finds, for each neuron, the facet that is lowest at a point x (the hull's upper
envelope there): sort the inputs by r_i = (x_i - L'_i) / (U'_i - L'_i), add them to I in that
order while l(I) stays >= 0; the next one is h.
"""

from __future__ import annotations

import math
import time
from contextlib import closing
from dataclasses import dataclass, field

import numpy as np
import torch

from nnspec.bounds.relax import numel, signed_rows

GUARD = 1e-9  # each facet's intercept is raised by this share of its terms' magnitude (float64 rounding)


@dataclass
class Facets:
    """One upper line per neuron of a ReLU: y_j <= G[j] . x + c[j] for x = the values of op
    ``source`` (the ReLU's affine layer's input), where ``valid[j]`` (elsewhere the triangle).
    Either one set for every box and objective (G (n_out, n_in)) or one per box and objective
    (G (B, S, n_out, n_in), c and valid (B, S, n_out))."""

    source: str
    G: torch.Tensor  # (n_out, n_in) or (B, S, n_out, n_in), float64
    c: torch.Tensor  # (n_out,) or (B, S, n_out)
    valid: torch.Tensor  # like c, bool
    # the neurons that rows of G are for (None: all of them, in order): the others have none
    neurons: torch.Tensor | None = None
    _casts: dict = field(default_factory=dict, repr=False)

    def cast(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        if dtype not in self._casts:
            self._casts[dtype] = (self.G.to(dtype), self.c.to(dtype))
        return self._casts[dtype]

    def valid_of(self, n: int) -> torch.Tensor:
        """``valid`` over all n neurons of the layer (False for those without a row)."""
        if self.neurons is None:
            return self.valid
        if "valid" not in self._casts:
            full = torch.zeros(self.valid.shape[:-1] + (n,), dtype=torch.bool)
            full[..., self.neurons] = self.valid
            self._casts["valid"] = full
        return self._casts["valid"]

    def apply(self, direct: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Coefficients ``direct`` (B, S, n_out) on the facets -> (on the source (B, S, n_in),
        the intercepts' sum (B, S))."""
        G, c = self.cast(direct.dtype)
        if self.neurons is not None:
            direct = direct[..., self.neurons]
        g = direct @ G if G.dim() == 2 else (direct.unsqueeze(-2) @ G).squeeze(-2)
        return g, (direct * c).sum(-1)


def facets_at(w: torch.Tensor, b: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, x: torch.Tensor,
              source: str, neurons: torch.Tensor | None = None) -> Facets:
    """Per neuron of y = ReLU(w x + b) (w (n_out, n_in)) with x in [lo, hi], the hull's facet
    that is lowest at the point ``x``: x (n_in,) gives one set, x (B, S, n_in) one per box and
    objective (lo, hi (n_in,) or (B, 1, n_in)). ``valid`` is False where a neuron has none (it
    is stable on the box, or the box is not finite). ``neurons``: only these (the ones a caller
    knows to be unstable; the cost is per neuron and point)."""
    w, b = w.double(), b.double()
    if neurons is not None:
        w, b = w[neurons], b[neurons]
    single = x.dim() == 1
    x = x.double().reshape((1, 1) + tuple(x.shape[-1:]) if single else x.shape)
    lo, hi = lo.double(), hi.double()
    lo = lo.reshape((1, 1, -1) if lo.dim() == 1 else lo.shape)[..., None, :]  # (B, 1, 1, n_in)
    hi = hi.reshape((1, 1, -1) if hi.dim() == 1 else hi.shape)[..., None, :]
    x = torch.minimum(torch.maximum(x[..., None, :], lo), hi)  # (B, S, 1, n_in)
    positive = w >= 0
    low_end = torch.where(positive, lo, hi)  # L', (B, 1, n_out, n_in)
    width = torch.where(positive, hi, lo) - low_end  # U' - L', signed like w
    safe = torch.where(width != 0, width, torch.ones_like(width))
    # where each input lies between its ends, as the neuron sees it: the order of these values
    # only chooses the subset I, and every I gives a valid facet (the arithmetic below is float64
    # on the order given), so float32 serves; (B, S, n_out, n_in) is the size of everything here
    r = (x.float() - low_end.float()).div_(safe.float()).masked_fill_(width == 0, 0.0)
    order = torch.sort(r, dim=-1, stable=True).indices
    del r
    shape = order.shape
    drop = -w * width  # <= 0: what l(I) loses when i joins I
    top = (w * (low_end + width)).sum(-1) + b  # l(empty set): the interval upper bound, (B, 1, n_out)
    ell = drop.expand(shape).gather(-1, order).cumsum_(-1).add_(top[..., None])  # l(the first k + 1)
    negative = ell < 0
    finite = torch.isfinite(lo).all(-1) & torch.isfinite(hi).all(-1)
    valid = negative.any(-1) & (top >= 0) & finite
    k = negative.to(torch.uint8).argmax(-1, keepdim=True)  # h's place in the order
    del negative
    h = order.gather(-1, k)
    ell_I = torch.where(k > 0, ell.gather(-1, (k - 1).clamp(min=0)), top[..., None])
    del ell
    inside = torch.zeros(shape, dtype=torch.bool).scatter_(-1, order, torch.arange(shape[-1]) < k)  # I
    del order
    slope_h = ell_I / safe.expand(shape).gather(-1, h)
    G = w * inside
    del inside
    terms = G * low_end
    low_h = low_end.expand(shape).gather(-1, h)
    c = -terms.sum(-1) - (slope_h * low_h)[..., 0]
    scale = terms.abs_().sum(-1) + (slope_h * low_h).abs()[..., 0] + b.abs() + 1.0
    del terms
    G.scatter_add_(-1, h, slope_h)
    c = c + GUARD * scale
    valid = valid & torch.isfinite(c)
    G.masked_fill_(~valid[..., None], 0.0)  # (not a product: an infinite box's slopes are inf or nan)
    c = torch.where(valid, c, torch.zeros_like(c))
    if single:
        return Facets(source, G[0, 0], c[0, 0], valid[0, 0], neurons)
    return Facets(source, G, c, valid, neurons)


def chain_facets(layers: list, relus: list[str], box_lo: torch.Tensor, box_hi: torch.Tensor, pre: list,
                 points: list) -> dict[str, Facets]:
    """Facets for the ReLUs of an affine/ReLU chain (``exact.chain_layers``: ``layers[k]`` =
    (W, b) from the k-th ReLU's layer input, the flat input or the previous ReLU's output, to its
    input), each at the point ``points[k]`` of its layer input. The boxes: [box_lo, box_hi] for
    the input, the previous pre-activation bounds ``pre[k - 1]`` through the ReLU after it.
    Keyed by ReLU name; the source of the k-th is ``"input"`` or the (k-1)-th ReLU."""
    out = {}
    for k, relu in enumerate(relus):
        w, b = (torch.as_tensor(t).double() for t in layers[k])
        if k == 0:
            lo, hi = box_lo.reshape(-1), box_hi.reshape(-1)
        else:
            lo, hi = (torch.as_tensor(t).double().reshape(-1).clamp(min=0) for t in pre[k - 1])
        x = torch.as_tensor(points[k]).double().reshape(-1)
        if w.shape[1] != x.numel() or lo.numel() != x.numel():
            continue
        out[relu] = facets_at(w, b, lo, hi, x, "input" if k == 0 else relus[k - 1],
                              unstable(*(torch.as_tensor(t) for t in pre[k])))
    return out


def unstable(l: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The flat indices of the neurons whose bounds l < 0 < u in any box (l, u: (B, *shape) or
    flat): the only ones with facets."""
    mask = (l < 0) & (u > 0)
    if mask.dim() > 1:
        mask = mask.reshape(mask.shape[0], -1).any(0)
    return mask.nonzero().flatten()



# the hull method (``hull_bound``): FACET_STEPS steps of the slopes and the mix at FACET_LR after
# alpha-CROWN; branch and bound uses the same (``bab.beta._Fixed.with_facets``)
FACET_STEPS = 30
FACET_LR = 0.2


def hull_bound(engine, lo: torch.Tensor, hi: torch.Tensor, C: torch.Tensor, d: torch.Tensor | None = None, *,
               below: float = math.inf, alpha_steps: int = 20, deadline: float | None = None) -> torch.Tensor:
    """Lower bounds (B, S) of C @ y + d over the boxes (as ``BoundEngine.bound``): alpha-CROWN,
    then, on a chain of dense layers and ReLUs, for every box with an objective whose bound is
    still below ``below``, that box's intermediate bounds refined (``refine_bounds``,
    REFINE_IN_HULL) and, for each such objective, the facets at the LP relaxation's minimiser of
    that objective over that box (``solvers.milp.RelaxationLP``, one warm-started LP each) mixed
    into the final objective's upper lines and optimised with its slopes. On a chain with
    convolutions (densified, ``chain_of``) the same without the refinement, each LP by interior
    point (``relaxation_minimiser``), and a ReLU layer whose facets for all the objectives would
    pass HULL_MAX_ENTRIES entries keeps its triangles. Elsewhere (another graph, an LP that did
    not finish) the alpha-CROWN bound; every bound is sound."""
    from nnspec.solvers.milp import RelaxationLP, relaxation_minimiser

    lo, hi = lo.double(), hi.double()
    C = C.double()
    B, S = C.shape[:2]
    d = torch.zeros(B, S, dtype=torch.float64) if d is None else d.double().expand(B, S)
    state = engine.optimise(lo, hi, C, d, steps=alpha_steps, deadline=deadline)
    need = state.lower < below
    chain = chain_of(engine, convolutions=True)
    if chain is None or not bool(need.any()) or not state.alphas:
        return state.lower
    layers, preacts, relus = chain
    dense = chain_of(engine) is not None
    if REFINE_IN_HULL and dense:
        state.bounds = _refined_per_box(engine, state.bounds, lo, hi, need,
                                        time.perf_counter() + 3600 if deadline is None else deadline)
    flat_lo, flat_hi = lo.reshape(B, 1, -1), hi.reshape(B, 1, -1)
    points = [torch.zeros(B, S, w.shape[1], dtype=torch.float64) for w, _ in layers[:-1]]
    found = torch.zeros(B, S, dtype=torch.bool)
    for b in range(B):
        pre = [(state.bounds[p][0][b].flatten().numpy(), state.bounds[p][1][b].flatten().numpy()) for p in preacts]
        box = flat_lo[b, 0].numpy(), flat_hi[b, 0].numpy()
        lp = RelaxationLP(layers[:-1], pre, *box) if dense else None
        for s in need[b].nonzero().flatten().tolist():
            left = 60.0 if deadline is None else deadline - time.perf_counter()
            if left <= 0:
                break
            row = C[b, s].reshape(1, -1).numpy()
            xs = lp.minimiser(row[0] @ layers[-1][0], left) if dense else \
                relaxation_minimiser(layers, pre, *box, row, np.zeros(1), left, "ipm")
            if xs is not None:
                for k, x in enumerate(xs):
                    points[k][b, s] = torch.from_numpy(x)
                found[b, s] = True
    if not bool(found.any()):
        return state.lower
    facets = {}
    for k, relu in enumerate(relus):
        if relu not in state.alphas or \
                B * S * len(unstable(*state.bounds[preacts[k]])) * layers[k][0].shape[1] > HULL_MAX_ENTRIES:
            continue
        w, bias = (torch.from_numpy(t) for t in layers[k])
        if k == 0:
            box = (flat_lo, flat_hi)
        else:
            box = tuple(t.reshape(B, 1, -1).clamp(min=0) for t in state.bounds[preacts[k - 1]])
        f = facets_at(w, bias, box[0], box[1], points[k], "input" if k == 0 else relus[k - 1],
                      unstable(*state.bounds[preacts[k]]))
        f.valid &= found[..., None]
        facets[relu] = f
    opt = engine.optimise(lo, hi, C, d, steps=FACET_STEPS, lr=FACET_LR, bounds=state.bounds, deadline=deadline,
                          joint=False, facets=facets, start=state.alphas)
    return torch.maximum(state.lower, opt.lower)


# ``hull_bound``'s facets per ReLU layer, one set per box and objective, at most this many entries
# (float64; ``facets_at`` holds a few tensors of this size): a CNN's layers have thousands of inputs
HULL_MAX_ENTRIES = 2**25

# ``hull_bound`` refines each box's intermediate bounds first (``refine_bounds``): demo MLP,
# benchmark 9, median certified / exact radius 0.894 -> 0.909 (min 0.781 -> 0.802), 0.61 -> 1.41 s
# per point
REFINE_IN_HULL = True


def _refined_per_box(engine, bounds: dict, lo: torch.Tensor, hi: torch.Tensor, need: torch.Tensor,
                     deadline: float) -> dict:
    """``bounds`` (B, *shape) with every box that has an objective in ``need`` refined
    (``refine_bounds``, one box at a time)."""
    boxes = []
    for b in range(lo.shape[0]):
        one = {n: (l[b:b + 1], u[b:b + 1]) for n, (l, u) in bounds.items()}
        if bool(need[b].any()) and time.perf_counter() < deadline:
            one = refine_bounds(engine, one, lo[b:b + 1], hi[b:b + 1], deadline)
        boxes.append(one)
    return {n: (torch.cat([box[n][0] for box in boxes]), torch.cat([box[n][1] for box in boxes])) for n in bounds}


MAX_WEIGHTS = 4_000_000  # nonzero weights of the composed dense layers (the LP's size)


def chain_of(engine, convolutions: bool = False):
    """(layers, ReLU inputs, ReLU names) of the engine's graph as a chain of dense affine maps
    and ReLUs (``exact.chain_layers``) with at most MAX_WEIGHTS weights, or None; computed once
    per engine. Convolutions are densified only with ``convolutions``: for callers with one LP
    and one set of facets per objective (``bab.beta._Fixed.with_facets``, ``hull_bound``);
    ``refine_bounds``' LP per unstable neuron does not fit a CNN's thousands of them."""
    dense = not any(op.kind == "affine" and op.matrix is None and op.back not in ("reshape", "shift")
                    for op in engine.ops)
    if not (dense or convolutions):  # (not densified for callers that would not use it)
        return None
    if not hasattr(engine, "_hull_chain"):
        from nnspec.bounds.exact import chain_layers
        from nnspec.bounds.graph import Unsupported

        engine._hull_chain = None
        try:
            layers, preacts = chain_layers(engine)
        except Unsupported:
            return None
        relus = [op.name for op in engine.ops if op.kind == "relu"]
        if len(relus) == len(preacts) and all(p is not None for p in preacts) and \
                sum(int((w != 0).sum()) for w, _ in layers) <= MAX_WEIGHTS:
            engine._hull_chain = (layers, preacts, relus)
    return engine._hull_chain


def refine_bounds(engine, bounds: dict, lo: torch.Tensor, hi: torch.Tensor, deadline: float,
                  workers: int = 1) -> dict:
    """Tighter bounds of a dense chain's ReLU inputs over one box (``bounds`` (1, *shape) each,
    as ``BoundEngine.intervals`` gives them), layer by layer from the second: for every neuron
    still unstable, its lower and upper bound each by a backward pass with the facets at the
    point where the triangle LP relaxation of the layers before it reaches that bound (one LP
    per bound, warm-started in HiGHS; ``workers`` processes share a layer's LPs), their mix and
    the slopes optimised (FACET_STEPS), intersected with the old ones. A layer's bounds feed
    the next one's LPs and facets. Before its LPs each layer gets a backward pass on the layers
    refined so far (``_tighten``, BACKWARD_STEPS); the neurons it shows inactive get no LPs. The
    LPs stop at ``deadline`` (a layer not finished keeps its backward pass's bounds, and so do
    the layers after it, each with a backward pass of its own past the deadline). Sound: every
    bound is a backward pass over valid lines."""
    from nnspec.solvers import forked
    from nnspec.solvers.milp import relaxation_minimisers

    chain = chain_of(engine)
    if chain is None:
        return bounds
    layers, preacts, relus = chain
    if any(p not in bounds for p in preacts):
        return bounds
    bounds = dict(bounds)
    box_lo, box_hi = lo.double().reshape(-1), hi.double().reshape(-1)
    lps = True  # False once the time ran out: the layers left get the backward pass only
    for k in range(1, len(preacts)):
        name = preacts[k]
        l, u = bounds[name]
        was = ((l[0] < 0) & (u[0] > 0)).flatten()  # unstable before the backward pass
        # first a backward pass on the layers refined so far (alpha-CROWN, no LP): it is cheap,
        # and each neuron it shows inactive is two LPs saved; a layer the LPs do not reach keeps it.
        # (A neuron it shows active still gets its LPs: its bounds limit the next layers' LPs and
        # facets; without them, mnist_fc 256x6 prop_8 eps 0.05 ended with 85 neurons of its
        # fifth layer unstable instead of 75.)
        _tighten(engine, bounds, lo, hi, name, None, BACKWARD_STEPS)
        if not lps or time.perf_counter() >= deadline:
            lps = False
            continue
        l, u = bounds[name]
        idx = (was & (u[0].flatten() > 0)).nonzero().flatten()
        if not len(idx):
            continue
        pre = [(bounds[p][0][0].flatten().numpy(), bounds[p][1][0].flatten().numpy()) for p in preacts[:k]]
        rows = signed_rows(numel(engine.by_name[name].shape), idx)  # lower bounds, then -upper
        objectives = rows.numpy() @ layers[k][0]
        parts = [np.arange(len(objectives))[i::workers] for i in range(min(workers, len(objectives)))]
        problems = [(layers[:k], pre, box_lo.numpy(), box_hi.numpy(), objectives[part]) for part in parts]
        points = [None] * len(objectives)
        with closing(forked.solve_all(relaxation_minimisers, problems, deadline, workers)) as results:
            for i, found in results:
                if found is None:  # the time ran out (or the process died): this layer keeps the backward pass's
                    break
                for j, xs in zip(parts[i], found):
                    points[j] = xs
        if any(p is None for p in points):
            lps = False
            continue
        facets = {}
        for j in range(k):
            if j == 0:
                flo, fhi = box_lo, box_hi
            else:
                flo, fhi = (t.reshape(-1).clamp(min=0) for t in bounds[preacts[j - 1]])
            w, b = (torch.from_numpy(t) for t in layers[j])
            x = torch.stack([torch.from_numpy(p[j]) for p in points])[None]
            facets[relus[j]] = facets_at(w, b, flo.reshape(1, 1, -1), fhi.reshape(1, 1, -1), x,
                                         "input" if j == 0 else relus[j - 1], unstable(*bounds[preacts[j]]))
        _tighten(engine, bounds, lo, hi, name, facets, FACET_STEPS, idx)
    return bounds


# ``refine_bounds``' backward pass before a layer's LPs: alpha-CROWN steps on the slopes alone.
# mnist_fc 256x6 prop_0 eps 0.05 (two processes), 3 / 10 / 25 steps: 21.6 / 17.0 / 16.6 s, the
# roots 0.04 lower with 3; prop_8 the same bounds with each, in 45-49 s
BACKWARD_STEPS = 10


def _tighten(engine, bounds: dict, lo: torch.Tensor, hi: torch.Tensor, name: str, facets: dict | None,
             steps: int, idx: torch.Tensor | None = None) -> None:
    """``bounds[name]`` (1, *shape) intersected, for the neurons ``idx`` (flat; by default the
    unstable ones), with alpha-CROWN's bounds on ``bounds`` (the ops before it), ``facets`` in
    the relaxation where given."""
    l, u = bounds[name]
    if idx is None:
        idx = ((l[0] < 0) & (u[0] > 0)).flatten().nonzero().flatten()
    if not len(idx):
        return
    rows = signed_rows(numel(engine.by_name[name].shape), idx)  # lower bounds, then -upper
    shape = (1,) + tuple(engine.graph.input_shape)
    state = engine.optimise(lo.reshape(shape), hi.reshape(shape), rows[None], steps=steps, lr=FACET_LR,
                            bounds=bounds, joint=False, facets=facets, target=name)
    best = state.lower
    n = len(idx)
    lf, uf = l.flatten(1).clone(), u.flatten(1).clone()
    lf[:, idx] = torch.maximum(lf[:, idx], best[:, :n])
    uf[:, idx] = torch.minimum(uf[:, idx], -best[:, n:])
    bounds[name] = (lf.reshape(l.shape), uf.reshape(u.shape))
