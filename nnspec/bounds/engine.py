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
for CROWN, from a CROWN pass of their own (identity objectives), whichever is tighter.
alpha-CROWN (Xu et al. 2021) makes the lower slope of each unstable ReLU a free parameter in [0, 1]
per objective and maximises the bound by projected gradient ascent; every iterate is sound, the
best one per objective is kept.

Arithmetic is float64 on float64 copies of the weights. The network runs in float32; callers that
turn a bound into a proof ask for a margin above a slack (see ``nnspec.bounds.radius``). A backward
pass runs in its coefficients' dtype: branch and bound optimises its parameters in float32 and
evaluates every bound it uses in float64 (``nnspec.bounds.bab``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from nnspec.bounds.ascent import Adam
from nnspec.bounds.graph import BoundGraph, Op

ELEMENTWISE = ("relu", "leaky_relu", "sigmoid", "tanh", "sign")
_MEMORY = 192 * 2**20  # bytes of coefficients per backward chunk
_JOINT_ALPHA_LIMIT = 16_000_000  # slope parameters, beyond which only the final objective's are optimised
MIX_START = 0.5  # an unstable neuron's share of the triangle in its upper line at the start (the rest: its facet)


class BoundEngine:
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
        self._casts: dict[tuple, torch.Tensor] = {}

    # ------------------------------------------------------------------ forward: intervals

    def intervals(self, lo: torch.Tensor, hi: torch.Tensor, method: str = "crown",
                  splits: dict[str, torch.Tensor] | None = None,
                  prior: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None) -> dict[str, tuple]:
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
                    bounds[op.name] = (lo, hi)
                    continue
                l, u = self._ibp(op, bounds)
                if prior is not None and op.name in prior:
                    l, u = _intersect((l, u), prior[op.name])
                elif method != "ibp" and op.name in self.preact and op.name not in self._exact:
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
                l, u = self._ibp(op, bounds)
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
                l, u = _intersect((l, u), (concretise(fl, False), concretise(fu, True)))
                if prior is not None and op.name in prior:
                    l, u = _intersect((l, u), prior[op.name])
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
        rows = self._rows_to_bound(op.name, (l, u))
        if rows is not None and not len(rows):
            return l, u
        return _intersect((l, u), self._crown_bounds(op, bounds, rows))

    def _rows_to_bound(self, name: str, bounds: tuple) -> torch.Tensor | None:
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

    def _ibp(self, op: Op, bounds) -> tuple[torch.Tensor, torch.Tensor]:
        ins = [bounds[i] for i in op.inputs]
        if op.kind == "affine" and not op.signs:
            (l, u), = ins
            c, r = (u + l) / 2, (u - l) / 2
            c2, r2 = op.fn(c), op.abs_fn(r)
            return c2 - r2, c2 + r2
        if op.kind == "affine":
            low = op.fn(*(l if s > 0 else u for (l, u), s in zip(ins, op.signs)))
            high = op.fn(*(u if s > 0 else l for (l, u), s in zip(ins, op.signs)))
            if op.pool is not None:  # a decomposed max-pool: also within the max of its window's intervals
                pl, pu = bounds[op.pool_input]
                low, high = torch.maximum(low, op.pool(pl)), torch.minimum(high, op.pool(pu))
            return low, high
        (l, u), = ins  # elementwise and max-pooling: nondecreasing in every argument
        return op.fn(l), op.fn(u)

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
        n = _numel(op.shape)
        k = n if rows is None else len(rows)
        widest = max(_numel(o.shape) for o in self.ops[: self.graph.index[op.name] + 1])
        chunk = max(1, min(2 * k, _MEMORY // max(1, 8 * B * widest * 3)))
        objectives = _signed_rows(n, rows)  # (2k, n)
        lows = []
        for start in range(0, 2 * k, chunk):
            c = objectives[start:start + chunk]
            A = c[None].expand(B, -1, -1).reshape((B, c.shape[0]) + op.shape)
            lows.append(self.backward(op.name, A, bounds))
        low = torch.cat(lows, dim=1)  # (B, 2k)
        if rows is None:
            return low[:, :n].reshape((B,) + op.shape), (-low[:, n:]).reshape((B,) + op.shape)
        cl = torch.full((B, n), -math.inf, dtype=torch.float64)
        cu = torch.full((B, n), math.inf, dtype=torch.float64)
        cl[:, rows], cu[:, rows] = low[:, :k], -low[:, k:]
        return cl.reshape((B,) + op.shape), cu.reshape((B,) + op.shape)

    # ------------------------------------------------------------------ backward: linear relaxation

    def backward(self, start: str, A0: torch.Tensor, bounds, alphas: dict | None = None,
                 record: dict | None = None, betas: dict | None = None, cache: dict | None = None,
                 facets: dict | None = None, mix: dict | None = None) -> torch.Tensor:
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
        for any mix: both lines hold on the box)."""
        B, S = A0.shape[:2]
        coeffs: dict[str, torch.Tensor] = {start: A0}
        lower = torch.zeros(B, S, dtype=A0.dtype)
        for op in reversed(self.ops[: self.graph.index[start] + 1]):
            a = coeffs.pop(op.name, None)
            if a is None:
                continue
            if record is not None and (op.kind == "input" or op.kind in ELEMENTWISE):
                record[op.name] = a.detach()
            if op.kind == "input":
                l, u = bounds[op.name]
                lower = lower + _concretise(a, l, u)
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
                        cache[op.name] = _relu_parts(op, l, u)
                    al, bl, au, bu = _relu_lines(op, cache[op.name], alpha)
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
                lower = lower + _concretise(a, l, u)
        return lower

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
            n_in, n_out = _numel(ins[0]), _numel(op.shape)
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
              bounds: dict | None = None) -> torch.Tensor:
        """Lower bounds (B, S) of C @ y + d over each box; ``method`` ibp | crown | alpha, or forward |
        forward+crown (the intermediate bounds so, the objective's by a CROWN pass)."""
        if method == "alpha":
            return self.optimise(lo, hi, C, d, steps=alpha_steps, lr=lr, bounds=bounds).lower
        lo, hi = lo.to(torch.float64), hi.to(torch.float64)
        C = C.to(torch.float64)
        B, S = C.shape[:2]
        d = torch.zeros(B, S, dtype=torch.float64) if d is None else d.to(torch.float64).expand(B, S)
        if bounds is None:
            bounds = self.intervals(lo, hi, method if method in ("ibp", "forward", "forward+crown") else "crown")
        out = self.graph.output
        if method == "ibp":
            l, u = bounds[out]
            return _concretise(C, l.flatten(1), u.flatten(1)) + d
        if method not in ("crown", "forward", "forward+crown"):
            raise ValueError(f"unknown bound method {method!r}")
        with torch.no_grad():
            return self.backward(out, C.reshape((B, S) + self.by_name[out].shape), bounds) + d

    def optimise(self, lo: torch.Tensor, hi: torch.Tensor, C: torch.Tensor, d: torch.Tensor | None = None,
                 steps: int = 20, lr: float = 0.25, bounds: dict | None = None,
                 deadline: float | None = None, joint: bool | None = None,
                 start: dict | None = None, facets: dict | None = None, target: str | None = None) -> "Optimised":
        """alpha-CROWN: the best lower bounds (B, S) of C @ y + d over each box, the tightest bounds
        of every op seen on the way (each iteration's are sound, so their intersection is) and the
        final objective's slopes at the end (a warm start for branch and bound's subdomains).
        ``deadline`` (time.perf_counter()): no step starts after it. ``joint``: optimise every
        intermediate bound's slopes too (default: when that is at most _JOINT_ALPHA_LIMIT
        parameters); False: the final objective's only, on the given ``bounds``, starting from
        ``start[relu]`` (B, S, *shape) where given (a warm start; any slopes are sound).
        ``facets`` (``hull.Facets`` per ReLU; with ``joint`` False only): each unstable neuron's
        upper line mixes its triangle with its facet, the mix optimised with the slopes (from
        ``start["mix:<relu>"]`` where given, else MIX_START) and returned in ``mix``. ``target``:
        the op whose values C weighs (with ``joint`` False; default the graph's output), e.g. an
        intermediate layer's neurons, C (B, S, *its shape)."""
        lo, hi = lo.to(torch.float64), hi.to(torch.float64)
        C = C.to(torch.float64)
        B, S = C.shape[:2]
        d = torch.zeros(B, S, dtype=torch.float64) if d is None else d.to(torch.float64).expand(B, S)
        if bounds is None:
            bounds = self.intervals(lo, hi, "crown")
        out = self.graph.output if target is None else target
        A0 = C.reshape((B, S) + self.by_name[out].shape)
        with torch.no_grad():
            best = self.backward(out, A0, bounds) + d
        if joint is None:
            joint = not facets and target is None and self._joint_alpha_size(B, bounds) <= _JOINT_ALPHA_LIMIT
        if joint:
            return self._alpha_joint(lo, hi, A0, d, bounds, best, steps, lr, deadline)
        alphas = self._initial_alphas(bounds, B, S, out)
        if not alphas:
            return Optimised(best, bounds, alphas)
        start = start or {}
        for name, a in start.items():
            if name in alphas:
                alphas[name] = a.to(torch.float64).clone().requires_grad_(True)
        mix = {name: (start[f"mix:{name}"].to(torch.float64).clone() if f"mix:{name}" in start else
                      torch.full((B, S, _numel(self.by_name[name].shape)), MIX_START,
                                 dtype=torch.float64)).requires_grad_(True)
               for name in (facets or {}) if name in alphas}
        self._clamp(alphas)  # each ReLU's own range (a leaky one's starts at its slope)
        optimiser = Adam(list(alphas.values()) + list(mix.values()), lr=lr)
        kept_alphas, kept_mix = _detached(alphas), _detached(mix)
        for _ in range(steps):
            if deadline is not None and time.perf_counter() > deadline:
                break
            optimiser.zero_grad()
            value = self.backward(out, A0, bounds, alphas, facets=facets, mix=mix) + d
            better = value.detach() > best
            if bool(better.any()):  # the parameters of the best iterate, per objective
                kept_alphas = {n: _where_rows(better, a.detach(), kept_alphas[n]) for n, a in alphas.items()}
                kept_mix = {n: _where_rows(better, m.detach(), kept_mix[n]) for n, m in mix.items()}
            best = torch.maximum(best, value.detach())
            if not value.requires_grad:  # the slopes do not reach the objective (e.g. behind a max-pool)
                break
            (-value.sum()).backward()
            optimiser.step()
            self._clamp(alphas)
            with torch.no_grad():
                for m in mix.values():
                    m.clamp_(0.0, 1.0)
        with torch.no_grad():
            value = self.backward(out, A0, bounds, alphas, facets=facets, mix=mix) + d
            better = value > best
            kept_alphas = {n: _where_rows(better, a.detach(), kept_alphas[n]) for n, a in alphas.items()}
            kept_mix = {n: _where_rows(better, m.detach(), kept_mix[n]) for n, m in mix.items()}
            best = torch.maximum(best, value)
        return Optimised(best, bounds, kept_alphas, kept_mix)

    # ------------------------------------------------------------------ alpha-CROWN with intermediate slopes

    def _crown_starts(self) -> list[str]:
        return [op.name for op in self.ops if op.name in self.preact and op.name not in self._exact]

    def _joint_alpha_size(self, B: int, bounds: dict) -> int:
        """Slope parameters that optimising every intermediate bound too would need: per
        nonlinearity input, two rows per neuron to bound (``_rows_to_bound``), each with slopes
        for every ReLU before it."""
        total = 0
        for start in self._crown_starts():
            k = self.graph.index[start]
            relus = sum(_numel(o.shape) for o in self.ops[:k] if o.kind in ("relu", "leaky_relu"))
            rows = self._rows_to_bound(start, bounds[start])
            total += 2 * (_numel(self.by_name[start].shape) if rows is None else len(rows)) * relus
        return B * total

    def _alpha_joint(self, lo, hi, A0, d, base, best, steps: int, lr: float, deadline: float | None = None
                     ) -> "Optimised":
        """alpha-CROWN proper: every intermediate bound gets its own slopes, all optimised together
        for the final objective; intermediate bounds are recomputed (and intersected with the
        CROWN ones, all sound) in every iteration."""
        B, S = A0.shape[:2]
        out = self.graph.output
        # rows only for the neurons CROWN's pass would bound (``_rows_to_bound``: before a ReLU,
        # those unstable on the starting bounds; on oval21's CNNs 2 x 508 rows of a layer of 2,048
        # neurons instead of 2 x 2,048)
        rows = {start: self._rows_to_bound(start, base[start]) for start in self._crown_starts()}
        rows = {start: torch.arange(_numel(self.by_name[start].shape)) if idx is None else idx
                for start, idx in rows.items()}
        rows = {start: idx for start, idx in rows.items() if len(idx)}
        params = {start: self._initial_alphas(base, B, 2 * len(idx), start) for start, idx in rows.items()}
        params[out] = self._initial_alphas(base, B, S, out)
        tensors = [a for group in params.values() for a in group.values()]
        if not tensors:
            return Optimised(best, base, {})
        optimiser = Adam(tensors, lr=lr)
        tightest = dict(base)
        for k in range(steps + 1):
            if k and deadline is not None and time.perf_counter() > deadline:
                break
            optimiser.zero_grad()
            bounds = self._tightened(lo, hi, base, params, rows)
            value = self.backward(out, A0, bounds, params[out]) + d
            best = torch.maximum(best, value.detach())
            tightest = {n: _intersect(tightest[n], (l.detach(), u.detach())) for n, (l, u) in bounds.items()}
            if not value.requires_grad:
                break
            (-value.sum()).backward()
            optimiser.step()
            for group in params.values():
                self._clamp(group)
        return Optimised(best, tightest, _detached(params[out]))

    def _tightened(self, lo, hi, base, params, rows) -> dict[str, tuple]:
        """Every op's bounds: intervals through the ops, intersected with ``base`` and, for the
        neurons ``rows[op]`` (flat indices), with a backward pass from each (upper and lower)
        with the slopes ``params[op]``."""
        bounds: dict[str, tuple] = {"input": base["input"]}
        B = lo.shape[0]
        for op in self.ops[1:]:
            l, u = _intersect(self._ibp(op, bounds), base[op.name])
            if op.name in rows:
                idx = rows[op.name]
                k = len(idx)
                A = _signed_rows(_numel(op.shape), idx)
                low = self.backward(op.name, A[None].expand(B, -1, -1).reshape((B, 2 * k) + op.shape), bounds,
                                    params[op.name])
                lf, uf = l.flatten(1), u.flatten(1)
                lf = lf.index_copy(1, idx, torch.maximum(lf[:, idx], low[:, :k]))
                uf = uf.index_copy(1, idx, torch.minimum(uf[:, idx], -low[:, k:]))
                l, u = lf.reshape(l.shape), uf.reshape(u.shape)
            bounds[op.name] = (l, u)
        return bounds

    def _clamp(self, alphas: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, alpha in alphas.items():
                op = self.by_name[name]
                alpha.clamp_(min=op.slope if op.kind == "leaky_relu" else 0.0, max=1.0)

    def _initial_alphas(self, bounds, B: int, S: int, start: str) -> dict[str, torch.Tensor]:
        """CROWN's slopes as the starting point, for the ReLUs that a pass from ``start`` crosses."""
        alphas = {}
        for op in self.ops[: self.graph.index[start]]:
            if op.kind not in ("relu", "leaky_relu"):
                continue
            l, u = bounds[op.inputs[0]]
            if not bool(((l < 0) & (u > 0)).any()):
                continue
            low = op.slope if op.kind == "leaky_relu" else 0.0
            init = torch.where(u > -l, 1.0, low).to(torch.float64)
            alphas[op.name] = init[:, None].expand((B, S) + op.shape).clone().requires_grad_(True)
        return alphas


@dataclass
class Optimised:
    lower: torch.Tensor  # (B, S) the best lower bounds
    bounds: dict  # op name -> (lo, hi), (B, *shape) each: the tightest seen, all sound
    alphas: dict  # ReLU name -> (B, S, *shape): the final objective's slopes (the best iterate's, with facets)
    mix: dict = field(default_factory=dict)  # ReLU name -> (B, S, n): the best iterate's triangle/facet mix


def _where_rows(better: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """``new`` where ``better`` (B, S), else ``old``; both (B, S, ...)."""
    return torch.where(better.view(better.shape + (1,) * (new.dim() - 2)), new, old)


def _signed_rows(n: int, rows: torch.Tensor | None) -> torch.Tensor:
    """Objectives (2k, n) for the lower and upper bounds of the neurons ``rows`` of n (all with
    None): +e_i for each, then -e_i for each."""
    eye = torch.eye(n, dtype=torch.float64)
    if rows is not None:
        eye = eye[rows]
    return torch.cat([eye, -eye])


def _intersect(a: tuple, b: tuple) -> tuple:
    """The intersection of two sound intervals (lo, hi); rounding could cross them by an ulp."""
    l, u = torch.maximum(a[0], b[0]), torch.minimum(a[1], b[1])
    return l, torch.maximum(u, l)


def cut_at_splits(l: torch.Tensor, u: torch.Tensor, split: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds of a nonlinearity input under branch and bound's splits (+1: the neuron is >= 0,
    -1: <= 0, 0: free). A split that contradicts the bounds leaves lo > hi: an empty subdomain."""
    return torch.where(split > 0, l.clamp(min=0), l), torch.where(split < 0, u.clamp(max=0), u)


def _detached(alphas: dict) -> dict:
    return {n: a.detach() for n, a in alphas.items()}


def relaxation(op: Op, l: torch.Tensor, u: torch.Tensor, alpha: torch.Tensor | None = None):
    """Lines al*x + bl <= f(x) <= au*x + bu on [l, u], elementwise: (al, bl, au, bu)."""
    kind = op.kind
    if kind in ("relu", "leaky_relu"):
        return _relu_lines(op, _relu_parts(op, l, u), alpha)
    if kind == "sign":  # nondecreasing: constant bounds sign(l) <= sign(x) <= sign(u)
        zero = torch.zeros_like(l)
        return zero, torch.sign(l), zero, torch.sign(u)
    if kind in ("sigmoid", "tanh"):
        return _parallel_chord(kind, l, u)
    raise ValueError(f"no relaxation for {kind}")  # pragma: no cover


def _relu_parts(op: Op, l: torch.Tensor, u: torch.Tensor) -> tuple:
    """What a ReLU's (or leaky ReLU's) relaxation on [l, u] takes from the bounds alone: the
    upper line (au, bu), which neurons are active and inactive, CROWN's lower slope and the zero
    intercept."""
    s = op.slope if op.kind == "leaky_relu" else 0.0
    active, inactive = l >= 0, u <= 0
    unstable = ~(active | inactive)
    width = torch.where(unstable, u - l, torch.ones_like(u))
    chord = (u - s * l) / width
    au = torch.where(active, 1.0, torch.where(inactive, s, chord)).to(l.dtype)
    bu = torch.where(unstable, s * l - chord * l, 0.0)
    crown = torch.where(active, 1.0, torch.where(inactive, s, torch.where(u > -l, 1.0, s))).to(l.dtype)
    return active, inactive, au, bu, crown, torch.zeros_like(l)


def _relu_lines(op: Op, parts: tuple, alpha: torch.Tensor | None):
    """(al, bl, au, bu) from ``_relu_parts``, the lower slope ``alpha`` (B, S, *shape) where given."""
    active, inactive, au, bu, crown, zero = parts
    if alpha is None:
        return crown, zero, au, bu
    s = op.slope if op.kind == "leaky_relu" else 0.0
    shape = (alpha.shape[0], 1) + tuple(active.shape[1:])
    al = torch.where(active.reshape(shape), 1.0, torch.where(inactive.reshape(shape), s, alpha))
    return al.to(au.dtype), zero, au, bu


def _parallel_chord(kind: str, l: torch.Tensor, u: torch.Tensor):
    """Both lines with the chord's slope k, their offsets the exact min and max of f(x) - k x on
    [l, u]: at the ends or where f'(x) = k (closed form for sigmoid and tanh). Sound for convex,
    concave and mixed intervals alike."""
    f = torch.sigmoid if kind == "sigmoid" else torch.tanh
    fl, fu = f(l), f(u)
    width = u - l
    mid = (l + u) / 2
    fm = f(mid)
    deriv = fm * (1 - fm) if kind == "sigmoid" else 1 - fm * fm
    k = torch.where(width > 1e-9, (fu - fl) / width.clamp_min(1e-300), deriv)
    cands = [l, u]
    if kind == "sigmoid":
        root = torch.sqrt((1 - 4 * k).clamp_min(0))
        for s in ((1 + root) / 2, (1 - root) / 2):
            s = s.clamp(1e-300, 1 - 1e-16)
            cands.append(torch.log(s) - torch.log1p(-s))
    else:
        t = torch.sqrt((1 - k).clamp_min(0)).clamp(max=1 - 1e-16)
        cands += [torch.atanh(t), -torch.atanh(t)]
    values = [torch.where((x >= l) & (x <= u), f(x) - k * x, f(l) - k * l) for x in cands]
    stacked = torch.stack(values)
    slack = 1e-12 * (1 + stacked.abs().amax(0))
    return k, stacked.amin(0) - slack, k, stacked.amax(0) + slack


def _concretise(a: torch.Tensor, l: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """min over x in [l, u] of sum(a * x): a (B, S, *shape), l and u (B, *shape) -> (B, S)."""
    a = a.flatten(2)
    l, u = l.reshape(l.shape[0], 1, -1), u.reshape(u.shape[0], 1, -1)
    return (a.clamp(min=0) * l + a.clamp(max=0) * u).sum(-1)


def _numel(shape) -> int:
    return int(math.prod(shape)) if shape else 1
