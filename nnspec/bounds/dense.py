"""The backward bound of a dense ReLU chain and its gradient, written out for branch and bound.

ReLU splitting (``bab.beta._bound_fixed``) optimises each batch of subdomains' slopes, split
multipliers and facet mix by a dozen gradient steps on ``BoundEngine.backward``. On mnist_fc's
pruned chains (layers of 4 to 90 neurons) those tensors are small, and autograd's recording and
replay of the pass cost more than its arithmetic: 2.3 ms of a 4.3 ms step, against 1.4 ms for
the pass itself (256 subdomains, one row, 256x4 prop_7 eps 0.05).

``DenseChain`` computes the same bound on a chain input -> (affine -> ReLU)* -> affine, and the
gradient of its sum by hand: one pass down the layers (the bound, keeping each ReLU's
coefficients) and one back up (each coefficient's adjoint), a matrix product per layer each
way. The bound is piecewise linear in the parameters; the gradient is the one autograd gives
(a tie at a coefficient of exactly 0 aside, where either side's is a subgradient).

Over an L1/L2 ball (``nnspec.bounds.balls``) the input's term is the minimum over the ball cut to
the box, and the adjoint there the point that reaches it.

It is used only to *choose* the parameters: branch and bound evaluates the bound it keeps with
the engine's own pass in float64 (sound for any slopes in [0, 1], multipliers >= 0 and mix in
[0, 1]), so an error here could cost tightness, never soundness.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nnspec.bounds.balls import BallBox, minimum_and_point
from nnspec.bounds.relax import relu_parts


@dataclass
class _Relu:
    """One ReLU of a batch: its relaxation on the subdomains' bounds, (B, 1, n) each."""
    active: torch.Tensor  # 1.0 where the neuron is active (l >= 0), else 0.0
    unstable: torch.Tensor  # 1.0 where l < 0 < u
    au: torch.Tensor  # the upper line: slope and intercept
    bu: torch.Tensor
    crown: torch.Tensor  # CROWN's lower slope, for a ReLU without slopes of its own
    # hull facets: 1.0 where an unstable neuron has one (B, 1, n), the layer's matrix with the
    # facets' rows below its own (2n, n_in), its transpose, and its bias with their intercepts
    fmask: torch.Tensor | None = None
    M: torch.Tensor | None = None
    Mt: torch.Tensor | None = None
    bext: torch.Tensor | None = None


@dataclass
class Batch:
    """What ``DenseChain.value_and_grad`` takes from a batch's bounds, computed once per batch."""
    lo: torch.Tensor  # (B, 1, n0), or (n0,) where every subdomain has the same box
    hi: torch.Tensor
    mid: torch.Tensor | None  # (n0,) the shared box's centre and radius, or None
    rad: torch.Tensor | None
    relus: list[_Relu]
    # with a shared box, the first layer's adjoint is top - sign(g) @ R: top = mid @ M^T + b and
    # R = diag(rad) M^T, for M the first layer's matrix (with its facets' rows, if any)
    top: torch.Tensor | None = None
    R: torch.Tensor | None = None
    ball: object | None = None  # the region's L1/L2 ball (``nnspec.bounds.balls``), one per subdomain


class DenseChain:
    """A bound engine's graph when it is exactly input -> (affine -> ReLU)* -> affine on flat
    vectors (``of``), e.g. what ``bab.beta._pruned`` builds."""

    def __init__(self, engine, affines: list, relus: list):
        self.affines = affines  # ops, input to output
        self.relu_ops = relus
        self.relus = [op.name for op in relus]
        self.preacts = [op.inputs[0] for op in relus]
        self.input = engine.ops[0].name
        self._weights: dict = {}

    @classmethod
    def of(cls, engine) -> "DenseChain | None":
        """The engine's chain, or None where its graph is anything else (computed once)."""
        if "_dense_chain" not in engine.__dict__:
            engine._dense_chain = cls._build(engine)
        return engine._dense_chain

    @classmethod
    def _build(cls, engine) -> "DenseChain | None":
        ops = engine.ops
        if len(ops) < 2 or ops[0].kind != "input" or len(ops[0].shape) != 1 or len(ops) % 2 != 0:
            return None
        affines, relus = [], []
        for i, op in enumerate(ops[1:], start=1):
            want = "affine" if i % 2 == 1 else "relu"
            if op.kind != want or op.inputs != (ops[i - 1].name,) or len(op.shape) != 1:
                return None
            if want == "affine":
                if op.matrix is None or tuple(op.matrix.shape) != (op.shape[0], ops[i - 1].shape[0]):
                    return None
                affines.append(op)
            else:
                relus.append(op)
        if engine.graph.output != ops[-1].name or ops[-1].kind != "affine":
            return None
        return cls(engine, affines, relus)

    def weights(self, dtype: torch.dtype) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per affine layer: W (n_out, n_in), its transpose (contiguous) and b (n_out,)."""
        if dtype not in self._weights:
            self._weights[dtype] = [(op.matrix.to(dtype), op.matrix.to(dtype).t().contiguous(),
                                     op.bias.reshape(-1).to(dtype)) for op in self.affines]
        return self._weights[dtype]

    def batch(self, bounds: dict, facets: dict | None = None, mix: dict | None = None) -> Batch | None:
        """The relaxations on ``bounds`` (op -> (l, u), (B, n) each, the dtype to work in), as
        ``BoundEngine.backward`` draws them: a ReLU's triangle upper line, and its facets where
        ``facets`` and ``mix`` both have it. None where a facet is not one set for every box
        (``hull.Facets`` with G (n_out, n_in)) on its layer's input: the engine's pass then."""
        lo, hi = bounds[self.input]
        dtype = lo.dtype
        weights = self.weights(dtype)
        relus = []
        for r, (name, pre) in enumerate(zip(self.relus, self.preacts)):
            l, u = bounds[pre]
            l, u = l.reshape(l.shape[0], 1, -1), u.reshape(u.shape[0], 1, -1)
            active, inactive, au, bu, crown, _ = relu_parts(self.relu_ops[r], l, u)  # the engine's lines
            unstable = ~(active | inactive)
            relu = _Relu(active.to(dtype), unstable.to(dtype), au, bu, crown)
            if facets is not None and mix is not None and name in facets and name in mix:
                facet = facets[name]
                source = self.input if r == 0 else self.relus[r - 1]
                if facet.G.dim() != 2 or facet.source != source:
                    return None
                relu.fmask = (unstable & facet.valid_of(l.shape[-1])).to(dtype)
                relu.M, relu.Mt, relu.bext = self._stacked(facet, weights[r], l.shape[-1], dtype)
            relus.append(relu)
        ball = getattr(bounds[self.input], "ball", None)
        if ball is not None:  # the input's minimum over the ball (and its point, for the adjoints)
            return Batch(lo.reshape(lo.shape[0], 1, -1), hi.reshape(hi.shape[0], 1, -1), None, None, relus,
                         ball=ball)
        same = lo.shape[0] == 1 or bool((lo == lo[:1]).all() and (hi == hi[:1]).all())
        if same:
            lo, hi = lo[0].reshape(-1), hi[0].reshape(-1)
            mid, rad = (lo + hi) / 2, (hi - lo) / 2
            first = relus[0] if relus else None
            if first is not None and first.Mt is not None:
                Mt, b = first.Mt, first.bext
            else:
                _, Mt, b = weights[0]
            return Batch(lo, hi, mid, rad, relus, mid @ Mt + b, rad[:, None] * Mt)
        return Batch(lo.reshape(lo.shape[0], 1, -1), hi.reshape(hi.shape[0], 1, -1), None, None, relus)

    @staticmethod
    def _stacked(facet, layer: tuple, n: int, dtype: torch.dtype) -> tuple:
        """[W; G] (2n, n_in) with G's rows at their neurons (zero elsewhere), its transpose and
        [b; c], kept with the facets (they hold for the whole search)."""
        key = ("dense", dtype)
        if key not in facet._casts:
            W, _, b = layer
            G, c = facet.cast(dtype)
            if facet.neurons is not None:
                G_full = torch.zeros((n, G.shape[1]), dtype=dtype)
                c_full = torch.zeros(n, dtype=dtype)
                G_full[facet.neurons], c_full[facet.neurons] = G, c
                G, c = G_full, c_full
            M = torch.cat([W, G], 0)
            facet._casts[key] = (M, M.t().contiguous(), torch.cat([b, c]))
        return facet._casts[key]

    def value_and_grad(self, batch: Batch, A0: torch.Tensor, alphas: dict, betas: dict,
                       mix: dict | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The bound (B, S) of ``BoundEngine.backward`` from the output with coefficients ``A0``
        (B, S, m), lower slopes ``alphas[relu]``, split terms ``betas[preact]`` (the signed ones
        the engine takes) and facet mix ``mix[relu]`` (each (B, S, n)), and the gradient of the
        bound's sum with respect to each of them: ``alpha:<relu>``, ``beta:<preact>``,
        ``mix:<relu>`` (zero where a parameter has no effect)."""
        mix = mix or {}
        weights = self.weights(A0.dtype)
        B, S = A0.shape[:2]
        a = A0.reshape(B, S, -1)
        lower = torch.zeros(B, S, dtype=A0.dtype)
        saved: list = [None] * len(self.relus)
        direct = None  # the coefficients a ReLU's negative ones give its facets
        for k in range(len(weights) - 1, -1, -1):
            W, _, b = weights[k]
            if direct is None:
                lower = lower + a @ b
                c = a @ W
            else:  # this layer's ReLU has facets: its matrix and theirs in one product
                relu = batch.relus[k]
                x = torch.cat([a, direct], -1)
                lower = lower + x @ relu.bext
                c = x @ relu.M
                direct = None
            if k == 0:
                g = c
                if batch.ball is not None:
                    low, point = minimum_and_point(g, BallBox(batch.lo[:, 0], batch.hi[:, 0], batch.ball))
                    lower = lower + low
                elif batch.mid is not None:
                    lower = lower + g @ batch.mid - g.abs() @ batch.rad
                else:
                    lower = lower + (g.clamp(min=0) * batch.lo + g.clamp(max=0) * batch.hi).sum(-1)
                break
            r = k - 1
            relu = batch.relus[r]
            pos = c.clamp(min=0)
            neg = c - pos
            t = None
            if relu.fmask is not None:
                t = 1 + relu.fmask * (mix[self.relus[r]] - 1)  # 1 where the neuron has no facet
                direct = neg - neg * t
                neg = neg * t
            alpha = alphas.get(self.relus[r])
            al = relu.crown if alpha is None else relu.active + relu.unstable * alpha
            new = pos * al + neg * relu.au
            lower = lower + (neg * relu.bu).sum(-1)
            beta = betas.get(self.preacts[r])
            if beta is not None:
                new = new + beta
            saved[r] = (c, pos, al, t)
            a = new
        # back up: the adjoint of each coefficient (d sum(bound) / d coefficient)
        grads: dict[str, torch.Tensor] = {}
        # on the input's coefficients: where their minimum is reached
        bar = point if batch.ball is not None else None if batch.mid is not None else \
            torch.where(g > 0, batch.lo, batch.hi)
        for r, relu in enumerate(batch.relus):
            c, pos, al, t = saved[r]
            if r == 0 and bar is None:  # the shared box: bar = mid - sign(g) * rad, its products kept
                both = batch.top - torch.matmul(g.sign(), batch.R)
                n = c.shape[-1]
                nu, q = (both, None) if t is None else (both[..., :n], both[..., n:])
            elif t is None:
                _, Wt, b = weights[r]
                nu = torch.matmul(bar, Wt) + b  # on ReLU r's input coefficients (its layer's output)
            else:
                both = torch.matmul(bar, relu.Mt) + relu.bext
                n = c.shape[-1]
                nu, q = both[..., :n], both[..., n:]  # q: on the facets' coefficients
            name = self.relus[r]
            if name in alphas:
                grads[f"alpha:{name}"] = relu.unstable * pos * nu
            if self.preacts[r] in betas:
                grads[f"beta:{self.preacts[r]}"] = nu
            upper = relu.au * nu + relu.bu  # a negative coefficient's adjoint through the triangle
            if t is None:
                down = upper
            else:
                gap = upper - q
                grads[f"mix:{name}"] = relu.fmask * (c - pos) * gap
                down = q + t * gap
            bar = torch.where(c > 0, al * nu, down)  # on ReLU r's output coefficients
        return lower, grads
