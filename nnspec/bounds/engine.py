"""Sound bounds of linear functions of a network's outputs over input boxes: interval bound
propagation (IBP), CROWN (backward linear relaxation) and alpha-CROWN (optimised ReLU slopes).

Everything is batched: B boxes (inputs, radii or subdomains) at once, S linear objectives each
(the rows of a property's DNF, the labels to beat). Given boxes [lo, hi] (B, *input_shape) and
objectives C (B, S, m), ``bound`` returns lower bounds (B, S) of C @ y(x) + d over each box.

CROWN (Zhang et al. 2018) runs backwards from the objective through the graph: an affine op maps
the coefficients A to its inputs (A @ W, here by autograd's vector-Jacobian product for any affine
op), an elementwise nonlinearity is replaced by the lower or upper line of its relaxation according
to the sign of each coefficient, and at the input the linear function is minimised over the box in
closed form. The relaxations need bounds of every nonlinearity's input: those come from IBP and,
for CROWN, from a CROWN pass of their own (identity objectives), whichever is tighter; for a
convolution's neurons that pass keeps each neuron's coefficients over its receptive field only
(``nnspec.bounds.patches``).
alpha-CROWN (Xu et al. 2021; ``nnspec.bounds.alpha``) makes the lower slope of each unstable ReLU
a free parameter in [0, 1] per objective and maximises the bound by projected gradient ascent;
every iterate is sound, the best one per objective is kept. The relaxations themselves are in
``nnspec.bounds.relax``.

Arithmetic is float64 on float64 copies of the weights. The network runs in float32; callers that
turn a bound into a proof ask for a margin above a slack (see ``nnspec.bounds.radius``). A backward
pass runs in its coefficients' dtype: branch and bound optimises its parameters in float32 and
evaluates every bound it uses in float64 (``nnspec.bounds.bab``).
"""

from __future__ import annotations

import contextlib
import math
import time

import torch
import torch.nn.functional as F

from nnspec.bounds import alpha, patches
from nnspec.bounds.balls import Ball, minimum, with_ball
from nnspec.bounds.graph import BoundGraph, Op
from nnspec.bounds.relax import (
    concretise,
    cut_at_splits,
    intersect,
    numel,
    relaxation,
    relu_lines,
    relu_parts,
    signed_rows,
    SMOOTH,
    VALLEYS,
    valley_interval,
)

ELEMENTWISE = ("relu", "leaky_relu", "sigmoid", "tanh", "erf", "sign", "softplus", "elu", "gelu", "silu", "exp")
_MEMORY = 192 * 2**20  # bytes of coefficients per backward chunk
CROWN_SCALE = 4096  # neurons in the widest nonlinear layer up to which CROWN is the default (IBP past it)


class PassStopped(Exception):
    """A CROWN pass stopped at the engine's ``deadline`` (``BoundEngine.stop_at``)."""


class BoundEngine:
    use_patches = True  # CROWN's intermediate bounds of convolutions in patches (``nnspec.bounds.patches``)
    deadline: float | None = None  # time.perf_counter() past which CROWN's intermediate passes stop (PassStopped)

    def __init__(self, graph: BoundGraph):
        self.graph = graph
        self.ops = graph.ops
        self.by_name = graph.by_name
        # the inputs of elementwise nonlinearities: where relaxations need bounds
        self.preact = {op.inputs[0] for op in self.ops if op.kind in ELEMENTWISE}
        self._exact = self._ibp_exact()
        # nonlinearity inputs read only by ReLUs: a neuron that IBP already finds stable has an exact
        # relaxation whatever its bounds, so CROWN needs to tighten only the unstable ones
        readers: dict[str, set[str]] = {}
        for op in self.ops:
            for i in op.inputs:
                readers.setdefault(i, set()).add(op.kind)
        self._relu_only = {n for n in self.preact if readers.get(n, set()) <= {"relu", "leaky_relu"}}
        # inputs read only by smooth nonlinearities: branch and bound may halve their intervals
        # (``relax.halved``); the op whose relaxation a halving narrows
        self.halvable = {op.inputs[0]: op for op in self.ops
                         if op.kind in SMOOTH and readers.get(op.inputs[0], set()) <= set(SMOOTH)}
        self._casts: dict[tuple, torch.Tensor] = {}

    @property
    def past_crown_scale(self) -> bool:
        """Whether a nonlinear layer is wider than CROWN_SCALE: where one CROWN pass over a box
        costs seconds (the DeepGame MNIST CNN: 2-8 s, more the more neurons are unstable)."""
        return max((numel(self.by_name[name].shape) for name in self.preact), default=0) > CROWN_SCALE

    # ------------------------------------------------------------------ forward: intervals

    def intervals(self, lo: torch.Tensor, hi: torch.Tensor, method: str = "crown",
                  splits: dict[str, torch.Tensor] | None = None,
                  prior: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
                  ball: Ball | None = None) -> dict[str, tuple]:
        """Bounds (lo, hi) of every op over the boxes, (B, *shape) each. ``splits``: per
        nonlinearity input, (B, *shape) with +1 (the neuron is >= 0 in this subdomain), -1 (<= 0)
        or 0 (free), as branch and bound fixes them; the bounds then hold on the subdomain only,
        and a subdomain whose splits contradict its bounds has lo > hi somewhere (it is empty).
        ``prior``: bounds (B, *shape) of nonlinearity inputs known to hold on each box (a parent
        box's, in branch and bound): intersected with the interval bounds instead of a CROWN pass
        for those ops (sound: the box lies inside the parent's)."""
        lo, hi = lo.to(torch.float64), hi.to(torch.float64)
        if method in ("forward", "forward+crown"):
            return self._forward_intervals(lo, hi, splits, prior, crown=method == "forward+crown")
        bounds: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        with torch.no_grad():
            for op in self.ops:
                if op.kind == "input":
                    bounds[op.name] = with_ball(lo, hi, ball)
                    continue
                l, u = self.interval(op, bounds)
                if prior is not None and op.name in prior:
                    l, u = intersect((l, u), prior[op.name])
                elif method != "ibp" and op.name in self.preact and (op.name not in self._exact or ball is not None):
                    # (IBP is exact over the box only: over a ball the first layer's pass is tighter)
                    self._check_deadline()
                    l, u = self._crown_tightened(op, l, u, bounds)
                if splits is not None and op.name in splits:
                    l, u = cut_at_splits(l, u, splits[op.name])
                bounds[op.name] = (l, u)
        return bounds

    def evaluate(self, x: torch.Tensor) -> torch.Tensor:
        """The graph's output at the points ``x`` (B, *input_shape), in float64, differentiable
        (``intervals`` at a point gives the same values without gradients)."""
        values: dict[str, torch.Tensor] = {}
        for op in self.ops:
            values[op.name] = x.to(torch.float64) if op.kind == "input" else op.fn(*(values[i] for i in op.inputs))
        return values[self.graph.output]

    def _forward_intervals(self, lo, hi, splits=None, prior=None, crown: bool = False) -> dict[str, tuple]:
        """Interval bounds tightened by forward linear bounds (symbolic intervals, as in ReluVal and
        Neurify; auto_LiRPA's forward mode): every op's value is kept between two affine
        functions of the input, L(x) <= v(x) <= U(x) on the box, carried forward op by op (an
        affine op maps them with its positive and negative parts, a nonlinearity through its
        relaxation lines at the bounds known so far) and concretised over the box where bounds
        are needed. Its cost grows with the input's size (d + 1 columns per value) instead of,
        as CROWN's, with the width and depth of the layers behind each bound: for a few input
        dimensions (ACAS Xu's 5) it is many times cheaper, and on the small boxes where input
        splitting spends its time it is about as tight. Each bound is intersected with the
        interval one (and with ``prior``), so it is never looser than IBP. ``crown``: each
        nonlinearity input's bounds are also tightened by a CROWN pass (over the neurons still
        unstable somewhere in the batch), which the forward functions after it use in turn."""
        B = lo.shape[0]
        d = lo[0].numel()
        flat_lo, flat_hi = lo.reshape(B, 1, d), hi.reshape(B, 1, d)
        bounds: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        lin: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # (B, d + 1, *shape): coefficients, then constant

        def concretise(f, upper: bool):
            w = f[:, :d].reshape(B, d, -1).transpose(1, 2)  # (B, n, d)
            pick = (w >= 0) == upper
            value = torch.where(pick, flat_hi, flat_lo)
            return ((w * value).sum(-1) + f[:, d].reshape(B, -1)).reshape(f[:, d].shape)

        with torch.no_grad():
            for op in self.ops:
                if op.kind == "input":
                    eye = torch.eye(d, dtype=torch.float64).reshape((1, d) + lo.shape[1:]).expand(B, -1, *lo.shape[1:])
                    f = torch.cat([eye, torch.zeros((B, 1) + lo.shape[1:], dtype=torch.float64)], 1)
                    bounds[op.name], lin[op.name] = (lo, hi), (f, f)
                    continue
                l, u = self.interval(op, bounds)
                if op.kind == "affine":
                    bias = self._cast(op, "bias", torch.float64)

                    def linear(*xs, op=op, bias=bias):  # the linear part: fn(x) - fn(0)
                        return op.fn(*xs) - bias

                    if op.signs:  # monotone in each argument: its lower or upper function
                        fl = self._columns(linear, [lin[i][0 if s > 0 else 1] for i, s in zip(op.inputs, op.signs)], B, d)
                        fu = self._columns(linear, [lin[i][1 if s > 0 else 0] for i, s in zip(op.inputs, op.signs)], B, d)
                    else:  # W L+ + W- U = W (L + U) / 2 - |W| (U - L) / 2, column by column
                        (gl, gu), = [lin[i] for i in op.inputs]
                        mid = self._columns(linear, [(gl + gu) / 2], B, d)
                        rad = self._columns(op.abs_fn, [(gu - gl) / 2], B, d)
                        fl, fu = mid - rad, mid + rad
                    fl[:, d] += bias[0]
                    fu[:, d] += bias[0]
                elif op.kind in ELEMENTWISE:
                    gl, gu = lin[op.inputs[0]]
                    pl, pu = bounds[op.inputs[0]]
                    al, bl, au, bu = relaxation(op, pl, pu)
                    al, au = al.unsqueeze(1), au.unsqueeze(1)
                    fl = al.clamp(min=0) * gl + al.clamp(max=0) * gu
                    fu = au.clamp(min=0) * gu + au.clamp(max=0) * gl
                    fl[:, d] += bl
                    fu[:, d] += bu
                else:  # interval-only ops (max-pooling): constant functions
                    fl = torch.zeros((B, d + 1) + l.shape[1:], dtype=torch.float64)
                    fu = fl.clone()
                    fl[:, d], fu[:, d] = l, u
                l, u = intersect((l, u), (concretise(fl, False), concretise(fu, True)))
                if prior is not None and op.name in prior:
                    l, u = intersect((l, u), prior[op.name])
                if crown and op.name in self.preact and op.name not in self._exact:
                    l, u = self._crown_tightened(op, l, u, bounds)
                if splits is not None and op.name in splits:
                    l, u = cut_at_splits(l, u, splits[op.name])
                bounds[op.name], lin[op.name] = (l, u), (fl, fu)
        return bounds

    def _crown_tightened(self, op: Op, l, u, bounds) -> tuple[torch.Tensor, torch.Tensor]:
        """(l, u) intersected with op's CROWN bounds (on the earlier ops' ``bounds``): for ops read
        only by ReLUs, just the neurons unstable in some box of the batch (a stable one's
        relaxation is exact whatever its bounds)."""
        rows = self.rows_to_bound(op.name, (l, u))
        if rows is not None and not len(rows):
            return l, u
        return intersect((l, u), self._crown_bounds(op, bounds, rows))

    def rows_to_bound(self, name: str, bounds: tuple) -> torch.Tensor | None:
        """The flat indices of op ``name``'s neurons whose bounds a linear pass should tighten,
        given its current ``bounds`` (B, *shape): for an op read only by ReLUs, those unstable in
        some box of the batch (a stable one's relaxation is exact whatever its bounds); None
        (every neuron) otherwise."""
        if name not in self._relu_only:
            return None
        l, u = bounds
        return ((l < 0) & (u > 0)).flatten(1).any(0).nonzero().flatten()

    @staticmethod
    def _columns(fn, fs, B, d):
        """fn applied to each of the d + 1 columns of (B, d + 1, *shape) tensors, batched."""
        out = fn(*(f.reshape((B * (d + 1),) + f.shape[2:]) for f in fs))
        return out.reshape((B, d + 1) + out.shape[1:])

    def interval(self, op: Op, bounds) -> tuple[torch.Tensor, torch.Tensor]:
        ins = [bounds[i] for i in op.inputs]
        if op.kind == "affine" and not op.signs:
            (l, u), = ins
            c, r = (u + l) / 2, (u - l) / 2
            c2, r2 = op.fn(c), op.abs_fn(r)
            return c2 - r2, c2 + r2
        if op.kind == "affine":
            low = op.fn(*(l if s > 0 else u for (l, u), s in zip(ins, op.signs)))
            high = op.fn(*(u if s > 0 else l for (l, u), s in zip(ins, op.signs)))
            if op.pool is not None:  # a decomposed max-pool or clip: also within the original op's interval
                pl, pu = bounds[op.pool_input]
                low, high = torch.maximum(low, op.pool(pl)), torch.minimum(high, op.pool(pu))
            return low, high
        (l, u), = ins
        if op.kind in VALLEYS:  # (not monotone)
            return valley_interval(op.kind, l, u)
        return op.fn(l), op.fn(u)  # the other elementwise ops and max-pooling: nondecreasing

    def _ibp_exact(self) -> set[str]:
        """Ops whose IBP bound is exact: reached from the input through one affine op at most,
        and no nonlinearity (a CROWN pass there would only repeat it)."""
        depth: dict[str, int] = {}
        exact = set()
        for op in self.ops:
            if op.kind == "input":
                depth[op.name] = 0
                continue
            d = max((depth[i] for i in op.inputs), default=0)
            if op.kind == "affine" and op.signs and len(op.inputs) == 1:
                depth[op.name] = d  # a layout change keeps exactness
            elif op.kind == "affine" and len(op.inputs) == 1:
                depth[op.name] = d + 1
            else:
                depth[op.name] = 99
            if depth[op.name] <= 1:
                exact.add(op.name)
        return exact

    def _crown_bounds(self, op: Op, bounds, rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """CROWN bounds of the elements of op's output (all, or the flat indices ``rows``; the
        others get -inf / +inf): lower bounds of +x and of -x."""
        B = bounds["input"][0].shape[0]
        n = numel(op.shape)
        k = n if rows is None else len(rows)
        path = patches.chain(self, op) if self.use_patches else []
        lows = []
        if path:  # a convolution's neurons: each row's coefficients in its receptive field
            chunk = max(1, min(2 * k, _MEMORY // max(1, 8 * B * patches.row_elements(path, self) * 6)))
            index = torch.arange(n) if rows is None else rows
            index, sign = torch.cat([index, index]), torch.cat([torch.ones(k), -torch.ones(k)])
            for start in range(0, 2 * k, chunk):
                self._check_deadline()
                lows.append(patches.lower_bounds(self, path, index[start:start + chunk], sign[start:start + chunk],
                                                 bounds))
        else:
            widest = max(numel(o.shape) for o in self.ops[: self.graph.index[op.name] + 1])
            chunk = max(1, min(2 * k, _MEMORY // max(1, 8 * B * widest * 3)))
            objectives = signed_rows(n, rows)  # (2k, n)
            for start in range(0, 2 * k, chunk):
                self._check_deadline()
                c = objectives[start:start + chunk]
                A = c[None].expand(B, -1, -1).reshape((B, c.shape[0]) + op.shape)
                lows.append(self.backward(op.name, A, bounds, patch=True))
        low = torch.cat(lows, dim=1)  # (B, 2k)
        if rows is None:
            return low[:, :n].reshape((B,) + op.shape), (-low[:, n:]).reshape((B,) + op.shape)
        cl = torch.full((B, n), -math.inf, dtype=torch.float64)
        cu = torch.full((B, n), math.inf, dtype=torch.float64)
        cl[:, rows], cu[:, rows] = low[:, :k], -low[:, k:]
        return cl.reshape((B,) + op.shape), cu.reshape((B,) + op.shape)

    def _check_deadline(self) -> None:
        """(Before each op's CROWN bounds, each chunk of their rows and the objective's pass.)"""
        if self.deadline is not None and time.perf_counter() > self.deadline:
            raise PassStopped("a CROWN pass stopped at its deadline")

    @contextlib.contextmanager
    def stop_at(self, deadline: float | None):
        """Within it, CROWN's intermediate passes raise PassStopped once time.perf_counter() is
        past ``deadline`` (checked between chunks of rows): an anytime search's bound on how far
        one pass can overrun its time (the first pass on a wide network can take minutes)."""
        before, self.deadline = self.deadline, deadline
        try:
            yield
        finally:
            self.deadline = before

    # ------------------------------------------------------------------ backward: linear relaxation

    def backward(self, start: str, A0: torch.Tensor, bounds, alphas: dict | None = None,
                 record: dict | None = None, betas: dict | None = None, cache: dict | None = None,
                 facets: dict | None = None, mix: dict | None = None, patch: bool = False) -> torch.Tensor:
        """Lower bounds (B, S) of sum(A0 * value(start)) over the boxes, with the relaxations
        given by ``bounds`` (and, for ReLUs, the lower slopes ``alphas[op] (B, S, *shape)``).
        ``record``: filled with the coefficients reaching each nonlinearity and the input (for
        branching heuristics). ``betas[pre]`` (B, S, *shape): coefficients added to the
        nonlinearity input ``pre`` (beta-CROWN's split terms, -beta * split, which are <= 0 on the
        subdomain, so the bound stays sound for any beta >= 0). ``cache``: a dict kept by a caller
        that makes several passes on the same ``bounds`` (optimising slopes), where the parts of
        the relaxations that do not depend on the slopes are kept between passes. ``facets[relu]``
        (``hull.Facets``) with ``mix[relu]`` (B, S, n) in [0, 1]: an unstable neuron's upper line
        is mix * triangle + (1 - mix) * its hull facet, a line in the ReLU's layer's inputs (sound
        for any mix: both lines hold on the box). ``patch``: a plain CROWN pass (none of the above)
        whose coefficients left all flow back from one op of a convolution chain, each row's within
        a small window, finishes in patches (``_patched``): the same bound, cheaper."""
        B, S = A0.shape[:2]
        coeffs: dict[str, torch.Tensor] = {start: A0}
        lower = torch.zeros(B, S, dtype=A0.dtype)
        for op in reversed(self.ops[: self.graph.index[start] + 1]):
            a = coeffs.pop(op.name, None)
            if a is None:
                continue
            if patch and not coeffs and self.use_patches and a.dim() == 5:
                # all that is left flows back from this op: in patches where each row is local
                rest = self._patched(op, a, bounds)
                if rest is not None:
                    return lower + rest
            if record is not None and (op.kind == "input" or op.kind in ELEMENTWISE):
                record[op.name] = a.detach()
            if op.kind == "input":  # over the box, or the ball cut to it
                lower = lower + minimum(a, bounds[op.name])
            elif op.kind == "affine":
                lower = lower + (a.flatten(2) * self._cast(op, "bias", a.dtype).flatten(1)[None]).sum(-1)
                for name, g in zip(op.inputs, self._affine_back(op, a)):
                    if g is not None:
                        coeffs[name] = coeffs[name] + g if name in coeffs else g
            elif op.kind in ELEMENTWISE:
                l, u = bounds[op.inputs[0]]
                alpha = None if alphas is None else alphas.get(op.name)
                if cache is not None and op.kind in ("relu", "leaky_relu"):
                    if op.name not in cache:
                        cache[op.name] = relu_parts(op, l, u)
                    al, bl, au, bu = relu_lines(op, cache[op.name], alpha)
                elif cache is not None and op.kind in SMOOTH:  # no slopes to optimise: the lines themselves
                    if op.name not in cache:
                        cache[op.name] = relaxation(op, l, u)
                    al, bl, au, bu = cache[op.name]
                else:
                    al, bl, au, bu = relaxation(op, l, u, alpha)
                pos, neg = a.clamp(min=0), a.clamp(max=0)
                if facets is not None and mix is not None and op.name in facets and op.name in mix:
                    neg, intercept = self._facet_back(op, facets[op.name], mix[op.name], neg, l, u, coeffs)
                    lower = lower + intercept
                al = al if al.dim() == a.dim() else al[:, None]
                new = pos * al + neg * au[:, None]
                intercepts = neg * bu[:, None] if op.kind in ("relu", "leaky_relu") else \
                    pos * bl[:, None] + neg * bu[:, None]  # a ReLU's lower line has none
                lower = lower + intercepts.flatten(2).sum(-1)
                name = op.inputs[0]
                if betas is not None and name in betas:
                    new = new + betas[name]
                coeffs[name] = coeffs[name] + new if name in coeffs else new
            else:  # interval-only ops (max-pooling): concretise at their output
                l, u = bounds[op.name]
                lower = lower + concretise(a, l, u)
        return lower

    def _patched(self, op: Op, a: torch.Tensor, bounds) -> torch.Tensor | None:
        """The rest of a plain CROWN pass from ``op``'s coefficients ``a`` (B, S, C, h, w) in
        patches (``nnspec.bounds.patches``), where op starts a patch chain and every row's
        non-zero coefficients lie in a small window; None otherwise."""
        if not patches.chain(self, op, (1, 1)):
            return None
        local = patches.from_dense(a, tuple(op.shape))
        if local is None:
            return None
        p, y, x = local
        steps = patches.chain(self, op, tuple(p.shape[-2:]))
        return patches.run(self, steps, p, y, x, bounds) if steps else None

    def _facet_back(self, op: Op, facet, t: torch.Tensor, neg: torch.Tensor, l, u, coeffs: dict) -> tuple:
        """The share (1 - t) of the negative coefficients ``neg`` that meets the hull facets of
        ``op``: their coefficients go straight to the facets' source op (added to ``coeffs``).
        Returns the share t left for the triangle and the facets' intercepts' part of the bound
        (B, S)."""
        B, S = neg.shape[:2]
        flat = neg.reshape(B, S, -1)
        unstable = ((l < 0) & (u > 0)).reshape(l.shape[0], 1, -1) & facet.valid_of(flat.shape[-1])
        t = torch.where(unstable, t, torch.ones_like(t))
        direct = flat * (1 - t)
        g, intercepts = facet.apply(direct)
        src = facet.source
        g = g.reshape((B, S) + tuple(self.by_name[src].shape))
        coeffs[src] = coeffs[src] + g if src in coeffs else g
        return (flat * t).reshape(neg.shape), intercepts

    def _affine_back(self, op: Op, a: torch.Tensor) -> list[torch.Tensor | None]:
        B, S = a.shape[:2]
        ins = [self.by_name[i].shape for i in op.inputs]
        if len(ins) == 1:
            n_in, n_out = numel(ins[0]), numel(op.shape)
            if op.matrix is not None and tuple(op.matrix.shape) == (n_out, n_in):
                # a product on the last axis whose other axes are all 1: a matrix on flat vectors
                return [(a.reshape(B, S, n_out) @ self._cast(op, "matrix", a.dtype)).reshape((B, S) + tuple(ins[0]))]
            if op.back == "reshape" and n_in == n_out:
                return [a.reshape((B, S) + tuple(ins[0]))]
            if op.back == "shift" and tuple(ins[0]) == tuple(op.shape):
                return [a if op.signs[0] > 0 else -a]
            if op.back == "conv":
                g = self._conv_back(op, a, tuple(ins[0]))
                if g is not None:
                    return [g]
        flat = a.reshape((B * S,) + op.shape).to(torch.float64)  # op.fn holds float64 weights
        xs = [torch.zeros((B * S,) + s, dtype=torch.float64, requires_grad=True) for s in ins]
        with torch.enable_grad():
            out = op.fn(*xs)
            grads = torch.autograd.grad(out, xs, grad_outputs=flat, create_graph=a.requires_grad, allow_unused=True)
        return [None if g is None else g.reshape((B, S) + s).to(a.dtype) for g, s in zip(grads, ins)]

    def _conv_back(self, op: Op, a: torch.Tensor, in_shape: tuple) -> torch.Tensor | None:
        """The transpose of a convolution applied to ``a`` (B, S, *out_shape), by a transposed
        convolution in ``a``'s dtype, its output padding chosen to give back ``in_shape`` (the
        rows and columns a strided convolution never reads get 0); None where no output padding
        torch allows does (then autograd's path)."""
        B, S = a.shape[:2]
        c = op.conv
        kernel = self._cast(op, "kernel", a.dtype)
        sizes = kernel.shape[2:]
        extra = tuple(n_in - ((n_out - 1) * st - 2 * p + d * (k - 1) + 1) for n_in, n_out, st, p, d, k in zip(
            in_shape[1:], op.shape[1:], c["stride"], c["padding"], c["dilation"], sizes))
        if any(e < 0 or e >= max(st, d) for e, st, d in zip(extra, c["stride"], c["dilation"])):
            return None
        transpose = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[len(sizes) - 1]
        out = transpose(a.reshape((B * S,) + tuple(op.shape)), kernel, stride=c["stride"], padding=c["padding"],
                        output_padding=extra, groups=c["groups"], dilation=c["dilation"])
        return out.reshape((B, S) + in_shape)

    def _cast(self, op: Op, field: str, dtype: torch.dtype) -> torch.Tensor:
        """op's ``matrix`` or ``bias`` in ``dtype`` (float32 copies made once: branch and bound
        optimises its parameters in float32 and evaluates the final bound in float64)."""
        value = getattr(op, field)
        if value.dtype == dtype:
            return value
        key = (op.name, field, dtype)
        if key not in self._casts:
            self._casts[key] = value.to(dtype)
        return self._casts[key]

    # ------------------------------------------------------------------ the public entry

    def bound(self, lo: torch.Tensor, hi: torch.Tensor, C: torch.Tensor, d: torch.Tensor | None = None,
              method: str = "crown", alpha_steps: int = 20, lr: float = 0.25,
              bounds: dict | None = None, ball: Ball | None = None) -> torch.Tensor:
        """Lower bounds (B, S) of C @ y + d over each box; ``method`` ibp | crown | alpha, or forward |
        forward+crown (the intermediate bounds so, the objective's by a CROWN pass). ``ball``: over
        that L1/L2 ball cut to each box instead (CROWN and alpha-CROWN; IBP and the forward modes
        bound the box, which holds it). The linear methods' bound is at least the interval one over
        their own intermediate bounds, which lie inside IBP's: so every method here proves what
        IBP proves (a CROWN pass alone can be looser than IBP on a wide box)."""
        if method == "alpha":
            return self.optimise(lo, hi, C, d, steps=alpha_steps, lr=lr, bounds=bounds, ball=ball).lower
        lo, hi = lo.to(torch.float64), hi.to(torch.float64)
        C = C.to(torch.float64)
        B, S = C.shape[:2]
        d = torch.zeros(B, S, dtype=torch.float64) if d is None else d.to(torch.float64).expand(B, S)
        if bounds is None:
            bounds = self.intervals(lo, hi, method if method in ("ibp", "forward", "forward+crown") else "crown",
                                    ball=ball)
        out = self.graph.output
        if method == "ibp":
            l, u = bounds[out]
            return concretise(C, l.flatten(1), u.flatten(1)) + d
        if method not in ("crown", "forward", "forward+crown"):
            raise ValueError(f"unknown bound method {method!r}")
        self._check_deadline()
        with torch.no_grad():
            low = self.backward(out, C.reshape((B, S) + self.by_name[out].shape), bounds) + d
            if out not in bounds:  # (a caller's bounds of the nonlinearities' inputs only)
                return low
            return torch.fmax(low, concretise(C, *bounds[out]) + d)  # never below IBP's (fmax: 0 * inf)

    def optimise(self, lo: torch.Tensor, hi: torch.Tensor, C: torch.Tensor, d: torch.Tensor | None = None,
                 **options) -> alpha.Optimised:
        """alpha-CROWN on these boxes: ``nnspec.bounds.alpha.optimise`` (its options, its result)."""
        return alpha.optimise(self, lo, hi, C, d, **options)

    def crown_starts(self) -> list[str]:
        """The nonlinearity inputs whose bounds a CROWN pass tightens (IBP's are not already exact)."""
        return [op.name for op in self.ops if op.name in self.preact and op.name not in self._exact]
