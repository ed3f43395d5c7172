"""ReLU splitting in beta-CROWN's setting (Wang et al. 2021): the root's bounds and slopes
(``_Fixed``), a dense chain pruned of its inactive neurons (``_pruned``), and a batch of
subdomains bounded with their slopes and split multipliers optimised (``_bound_fixed``)."""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from nnspec.bounds import hull
from nnspec.bounds.ascent import Adam
from nnspec.bounds.bab import branching
from nnspec.bounds.bab.domains import _deciding_row, _Domain
from nnspec.bounds.balls import BallBox, ball_of, spread, with_ball
from nnspec.bounds.dense import DenseChain
from nnspec.bounds.engine import BoundEngine
from nnspec.bounds.relax import cut_at_splits, halved, intersect, numel
from nnspec.bounds.radius import reduce_rows

# beta-CROWN iterations per batch of subdomains (0: plain CROWN; fewer once every subdomain of the
# batch is proved) and the multipliers' step size. A new split's multiplier starts at 0, and with
# it a child's bound can be below its parent's (the split constraint z >= 0 or <= 0 enters only
# through the multiplier), so the parent's bound stands in, and the child's too-short optimisation
# is the warm start of its own children: with 8 steps at 0.1, mnist_fc 256x6 prop_7 eps 0.03 stalled
# at -0.157 for 45,000 subdomains at depth 50-70 where 100 steps proved one at +2.4. 12 at 0.5:
# proved in 3,817 subdomains (14 s; 20 at 0.5: 4,059 in 23 s; 8 at 0.5: not in 40 s). On oval21's
# CNNs the gains come in the first few steps and each step costs more: 12 at 0.5 keeps their
# times (cifar_base img2578 13 s, 14 s with 8 at 0.1, 21-32 s with 20). Stopping rules for
# stalled batches lost 256x6 prop_7 (docs/benchmarks.md, benchmark 12).
# Past BETA_MIN_STEPS a batch steps on only while its last step proved more of its subdomains
# (dense chains: DENSE_BETA_MIN_STEPS, below): since children carry on their parent's Adam run (ADAM_STATE), a batch far
# from its goal gains more from more subdomains than from more steps, one near it from the steps.
# One core, 2026-12-06: oval21 cifar_wide img9916's hard group after 130 s -0.186 with 12 steps,
# -0.159 with 6, -0.146 with 4, -0.144 with 3, -0.152 with 2, -0.151 with the rule; img2732's
# -0.402 with 12, -0.300 with 3; cifar_deep img1052's last group proved in 27.7 s (2,547
# subdomains) with 12, 36.6 s (7,943) with 4, 28.1 s (3,497) with the rule
BETA_STEPS = 12
BETA_MIN_STEPS = 4
# on dense chains (``DenseChain``: a step of 256 subdomains costs ~2 ms, less than the batch's
# splitting, branching and float64 pass around it) the searches take DENSE_BETA_STEPS: the 256
# lowest open subdomains of mnist_fc 256x4 prop_7 eps 0.05 group 0 after 20 s, bounded again, 22
# proved with 12 steps, 132 with 30; the groups' searches (one core, 2026-12-05): group 0 proved
# in 52 s against -0.009 after 60 s, groups 1 / 2 / 3 / 5 / 7 in 9.8 / 11.8 / 12.6 / 11.7 / 11.3 s
# against 11.8 / -0.04 after 40 s / 18.3 / 20.0 / 25.4 s (group 8: 6.0 s against 4.1)
DENSE_BETA_STEPS = 20
# and past DENSE_BETA_MIN_STEPS only while the last step proved more subdomains (the rule of
# BETA_MIN_STEPS, above). One core, `verify` in one process, 120 s (2026-12-06): mnist_fc 256x4
# prop_7 eps 0.05's hardest group proved after 65.6 s with 20 steps always, 58.7 / 47.0 / 63.6 s
# with a minimum of 4 / 8 / 12 (8 with at most 30: 49.0 s), and 3 more groups proved in the 120 s
# with 8 against none more; prop_13 eps 0.05's ten groups' searches 39 s against 70 s
DENSE_BETA_MIN_STEPS = 8
BETA_LR = 0.5
ALPHA_LR = 0.1
# a subdomain's children start from its last iterate, not its best: with the best, a subdomain whose
# steps never beat its first (its parent's slopes and multipliers, the new split's multiplier at 0)
# hands its children the same start, they take the same steps, and the search stalls. mnist_fc 256x4
# eps 0.05, a row's search alone after the refinement, 60 s on one core: prop_0 row 5 proved in 0.8 s
# (1,119 subdomains) against -0.41 after 60 s; prop_13 row 3 -0.09 against -1.24, prop_7 row 7 -0.32
# against -1.32 (docs/benchmarks.md, benchmark 12). The subdomain's own bound stays its best iterate's
WARM_FROM_LAST = True
# and with Adam's moments and step count (the warm start is [parameters | m | v | t], 3x the
# memory): a lineage of subdomains then takes one continued run of Adam instead of a fresh one
# per split, whose first step moves every parameter by its full step size (0.5 for a multiplier)
# whatever its gradient. mnist_fc 256x4 prop_7 eps 0.05, its hardest group (root -2.15), on the
# bounds that `verify` computes: stuck at -0.0022 (315,000 subdomains in 90 s on one core)
# without, proved in 45 s with; the other eight groups 95 s in all against 85 s; through `verify`
# (236 s, two processes) the instance is proved in 112 s, and not without (the same group at
# -0.0022 when the time ran out)
ADAM_STATE = True
ROOT_ALPHA_STEPS = 20


class _Fixed:
    """beta-CROWN's setting for ReLU splitting (Wang et al. 2021): the bounds of every
    nonlinearity input come from alpha-CROWN at the root box, with its intermediate slopes
    optimised (much tighter than CROWN's: on mnist_fc 256x4 a root bound of -0.23 against -0.90),
    and stay fixed in every subdomain except at the split neurons, whose bounds the split cuts at
    0. Each subdomain then costs one backward pass per step from the objective only (no CROWN
    pass per intermediate neuron), its final slopes starting from its parent's, optimised with
    the split multipliers. Sound: a subdomain lies inside the root box, so the root's bounds hold
    on it, and the split cut holds by definition."""

    MEMORY = 2 * 2**30  # bytes of warm-start slopes kept with open subdomains; beyond, the root's are used

    def __init__(self, bounds: dict, alphas: dict, lower: torch.Tensor, inputs: dict[str, str],
                 facets: dict | None = None, mix: dict | None = None, halving: dict | None = None):
        self.bounds = bounds  # op -> (l, u), (1, *shape)
        self.alphas = alphas  # ReLU -> (S, *shape) float32
        self.lower = lower  # (S,) the root's bounds of the rows
        self.inputs = inputs  # ReLU -> the name of its input (where its split multipliers act)
        self.facets = facets or {}  # ReLU -> hull.Facets, valid on the root box (see with_facets)
        self.mix = mix or {}  # ReLU -> (S, n) float32: the root's triangle/facet mix
        # smooth nonlinearity input -> its shape: branch and bound may halve its neurons' intervals,
        # each halved neuron's two ends a constraint with a multiplier of its own (``_bound_fixed``)
        self.halving = halving or {}
        # a subdomain's warm start is one flat float32 vector: its slopes (``alpha:<relu>``), its
        # split multipliers (``beta:<input>``), both (S, *shape) per ReLU with slopes, then its
        # triangle/facet mix (``mix:<relu>``, (S, n)) where there are facets (one copy per child
        # instead of one per tensor)
        self.shapes = {f"alpha:{n}": tuple(a.shape) for n, a in alphas.items()} | \
            {f"beta:{inputs[n]}": tuple(a.shape) for n, a in alphas.items()} | \
            {f"mix:{n}": tuple(m.shape) for n, m in self.mix.items()} | \
            {f"halve:{n}": (len(lower), 2) + tuple(shape) for n, shape in self.halving.items()}
        self.default = self.pack({f"alpha:{n}": a[None] for n, a in alphas.items()} |
                                 {f"beta:{inputs[n]}": torch.zeros((1,) + a.shape) for n, a in alphas.items()} |
                                 {f"mix:{n}": m[None] for n, m in self.mix.items()}, 1, missing=0.0)[0]
        # with Adam's moments and step count behind them (ADAM_STATE): [parameters | m | v | t]
        P = self.default.numel()
        self.start = torch.cat([self.default, torch.zeros(2 * P + 1)]) if ADAM_STATE else self.default
        self.per_domain = 4 * self.start.numel()  # bytes

    def rows(self, idx: torch.Tensor) -> "_Fixed":
        return _Fixed(self.bounds, {n: a[idx] for n, a in self.alphas.items()}, self.lower[idx], self.inputs,
                      self.facets, {n: m[idx] for n, m in self.mix.items()}, self.halving)

    def with_facets(self, engine: BoundEngine, lo: torch.Tensor, hi: torch.Tensor, C: torch.Tensor, offsets,
                    deadline: float) -> "_Fixed":
        """The same setting with hull facets (``nnspec.bounds.hull``) for the ReLUs of a chain of
        affine layers (convolutions densified) and ReLUs, chosen where the LP relaxation of the
        rows' largest value (+ ``offsets``) is least, and the root's slopes and mix optimised
        with them (FACET_STEPS; the root bound only rises). Itself when the network is not such
        a chain or the LP does not finish."""
        from nnspec.solvers.milp import relaxation_minimiser

        chain = hull.chain_of(engine, convolutions=True)
        if chain is None or any(p not in self.bounds for p in chain[1]):
            return self
        layers, preacts, relus = chain
        pre = [(self.bounds[p][0].flatten().numpy(), self.bounds[p][1].flatten().numpy()) for p in preacts]
        offs = np.zeros(len(C)) if offsets is None else offsets.double().numpy()
        # a CNN's LP (oval21: 3,072 inputs, 3,172-6,756 hidden neurons) by interior point:
        # cifar_deep 2.0 s against 66 s by the dual simplex; dense chains keep the simplex (mnist_fc
        # 256x4: 1.6 s against 2.0 s for nine groups, the same bounds within 0.01)
        method = "simplex" if hull.chain_of(engine) is not None else "ipm"
        points = relaxation_minimiser(layers, pre, lo.reshape(-1).numpy(), hi.reshape(-1).numpy(), C.numpy(), offs,
                                      deadline - time.perf_counter(), method)
        if points is None:
            return self
        facets = hull.chain_facets(layers, relus, lo, hi, pre, points)
        facets = {n: f for n, f in facets.items() if n in self.alphas and bool(f.valid.any())}
        if not facets:
            return self
        state = engine.optimise(lo[None], hi[None], C[None], steps=hull.FACET_STEPS, lr=hull.FACET_LR,
                                bounds=self.bounds, deadline=deadline, joint=False, facets=facets,
                                start={n: a[None].double() for n, a in self.alphas.items()})
        better = state.lower[0] > self.lower
        alphas = {n: a if n not in state.alphas else
                  torch.where(better.view((-1,) + (1,) * (a.dim() - 1)), state.alphas[n][0].float(), a)
                  for n, a in self.alphas.items()}  # (a ReLU that the root's bounds left stable has none)
        facets = {n: f for n, f in facets.items() if n in state.mix}
        mix = {n: torch.where(better[:, None], state.mix[n][0].float(), torch.ones_like(state.mix[n][0].float()))
               for n in facets}
        return _Fixed(self.bounds, alphas, torch.maximum(self.lower, state.lower[0]), self.inputs, facets, mix,
                      self.halving)

    def refined(self, engine: BoundEngine, lo: torch.Tensor, hi: torch.Tensor, C: torch.Tensor,
                deadline: float, workers: int = 1) -> "_Fixed":
        """The same setting on a dense chain's intermediate bounds tightened by LP-chosen hull
        facets (``hull.refine_bounds``, until ``deadline``, its LPs in ``workers`` processes),
        the root's slopes optimised again on them (the root bound only rises); itself
        elsewhere."""
        bounds = hull.refine_bounds(engine, self.bounds, lo, hi, deadline, workers)
        if bounds is self.bounds or all(bounds[n] is self.bounds[n] for n in bounds):
            return self
        state = engine.optimise(lo[None], hi[None], C[None], steps=ROOT_ALPHA_STEPS, lr=0.25, bounds=bounds,
                                joint=False, start={n: a[None].double() for n, a in self.alphas.items()})
        better = state.lower[0] > self.lower
        alphas = {n: a if n not in state.alphas else
                  torch.where(better.view((-1,) + (1,) * (a.dim() - 1)), state.alphas[n][0].float(), a)
                  for n, a in self.alphas.items()}
        return _Fixed(bounds, alphas, torch.maximum(self.lower, state.lower[0]), self.inputs, halving=self.halving)

    @classmethod
    def at_root(cls, engine: BoundEngine, lo: torch.Tensor, hi: torch.Tensor, C: torch.Tensor,
                deadline: float, ball=None) -> "_Fixed":
        """``ball``: the region is that L1/L2 ball cut to the box (``nnspec.bounds.balls``), which
        the input of the root's bounds then carries to every subdomain."""
        state = engine.optimise(lo[None], hi[None], C[None], steps=ROOT_ALPHA_STEPS, lr=0.25, deadline=deadline,
                                ball=ball)
        return cls(state.bounds, {n: a[0].float() for n, a in state.alphas.items()}, state.lower[0],
                   {n: engine.by_name[n].inputs[0] for n in state.alphas},
                   halving={n: tuple(engine.by_name[n].shape) for n in engine.halvable if n in state.bounds})

    def pack(self, params: dict[str, torch.Tensor], B: int, missing: float | None = None) -> torch.Tensor:
        """(B, P) float32 from ``alpha:``/``beta:``/``mix:``/``halve:`` tensors (B, S, ...), in
        ``shapes``' order (``missing``: the value of those ``params`` lacks)."""
        if not self.shapes:
            return torch.zeros(B, 0)
        return torch.cat([params[k].detach().reshape(B, -1).float() if k in params or missing is None else
                          torch.full((B, math.prod(shape)), missing) for k, shape in self.shapes.items()], 1)

    def views(self, packed: torch.Tensor) -> dict[str, torch.Tensor]:
        """``unpack`` without copies: (B, S, *shape) views of ``packed`` (B, P) per key."""
        out, at = {}, 0
        for k, shape in self.shapes.items():
            n = math.prod(shape)
            out[k] = packed[:, at:at + n].view((packed.shape[0],) + shape)
            at += n
        return out

    def columns(self, engine: BoundEngine) -> tuple[torch.Tensor, ...]:
        """Per column of the packed layout: its step size (ALPHA_LR for slopes and mix, BETA_LR
        for multipliers), its least and greatest value (a slope within [the ReLU's negative
        slope, 1], a multiplier >= 0, a mix within [0, 1]) and its objective row (long)."""
        if not hasattr(self, "_columns"):
            lr, low, high, row = [], [], [], []
            for k, shape in self.shapes.items():
                kind, name = k.split(":", 1)
                n = math.prod(shape)
                multiplier = kind in ("beta", "halve")
                least = 0.0
                if kind == "alpha" and engine.by_name[name].kind == "leaky_relu":
                    least = engine.by_name[name].slope
                lr.append(torch.full((n,), BETA_LR if multiplier else ALPHA_LR))
                low.append(torch.full((n,), least))
                high.append(torch.full((n,), math.inf if multiplier else 1.0))
                row.append(torch.arange(shape[0]).repeat_interleave(n // shape[0]))
            self._columns = tuple(torch.cat(t) if t else torch.zeros(0) for t in (lr, low, high)) + \
                (torch.cat(row) if row else torch.zeros(0, dtype=torch.long),)
        return self._columns

    def unpack(self, packed: torch.Tensor) -> dict[str, torch.Tensor]:
        """``pack``'s inverse: (B, S, *shape) per key (copies)."""
        out, at = {}, 0
        for k, shape in self.shapes.items():
            n = math.prod(shape)
            out[k] = packed[:, at:at + n].reshape((packed.shape[0],) + shape).clone()
            at += n
        return out

    def warm_start(self, packed: torch.Tensor, i: int, open_domains: int) -> torch.Tensor | None:
        """Subdomain i's slopes and split multipliers, packed, for its children to start from
        (None, the root's slopes and zero multipliers, once the open subdomains' would pass
        ``MEMORY``). A copy: a view would keep the whole batch's tensor alive while any child is open."""
        if (open_domains + 1) * self.per_domain > self.MEMORY:
            return None
        return packed[i].clone()


PRUNE_SHARE = 0.8  # ReLU splitting on dense chains: prune when at most this share of the neurons is left


def _pruned(engine: BoundEngine, fixed: _Fixed, lo: torch.Tensor, hi: torch.Tensor):
    """For a chain of dense layers and ReLUs: the same function on the box without the neurons
    that the root's bounds prove inactive (u <= 0, so their output is 0 everywhere in the box),
    as (engine, fixed, lo, hi) over the flat input, or None (another graph, or too few neurons
    to drop). Each subdomain's backward pass then multiplies by smaller matrices: on mnist_fc's
    open instances 61-88% of the neurons go (256x4 prop_0 eps 0.05 keeps 227 of 1,024). Every op
    and bound of the smaller network is the original one's restricted to the kept neurons, so its
    bounds hold for the original."""
    from nnspec.bounds.exact import chain_engine, chain_layers
    from nnspec.bounds.graph import Unsupported

    if any(op.kind == "affine" and op.matrix is None and op.back not in ("reshape", "shift") for op in engine.ops):
        return None  # convolutions and the like stay as they are (dense copies would cost more)
    try:
        layers, preacts = chain_layers(engine)
    except Unsupported:
        return None
    if not preacts or any(p is None or p not in fixed.bounds for p in preacts):
        return None
    keep = [(fixed.bounds[p][1][0].flatten() > 0).nonzero().flatten() for p in preacts]
    total = sum(numel(engine.by_name[p].shape) for p in preacts)
    if sum(len(k) for k in keep) > PRUNE_SHARE * total or any(len(k) == 0 for k in keep):
        return None
    small_layers, prev = [], None
    for k, (w, b) in enumerate(layers):
        w, b = torch.from_numpy(w), torch.from_numpy(b)
        if prev is not None:
            w = w[:, prev]
        if k < len(keep):
            w, b, prev = w[keep[k]], b[keep[k]], keep[k]
        small_layers.append((w.numpy(), b.numpy()))
    small = chain_engine(small_layers)
    flat_lo, flat_hi = lo.reshape(1, -1), hi.reshape(1, -1)
    # the same function on the box: checked on its corners and random points before it is used
    gen = torch.Generator().manual_seed(0)
    x = flat_lo + (flat_hi - flat_lo) * torch.rand(16, flat_lo.shape[1], dtype=torch.float64, generator=gen)
    x = torch.cat([x, flat_lo, flat_hi])
    with torch.no_grad():
        want = engine.evaluate(x.reshape((-1,) + tuple(engine.graph.input_shape))).flatten(1)
        got = small.evaluate(x).flatten(1)
    if not torch.allclose(got, want, rtol=1e-9, atol=1e-9 * (1 + float(want.abs().max()))):
        return None  # pragma: no cover - a chain the probe misread
    relu_of = {pre: relu for relu, pre in fixed.inputs.items()}
    relus = [op for op in small.ops if op.kind == "relu"]
    bounds, alphas, inputs = {"input": with_ball(flat_lo, flat_hi, ball_of(fixed.bounds))}, {}, {}
    for k, (pre, op) in enumerate(zip(preacts, relus)):
        l, u = fixed.bounds[pre]
        bounds[op.inputs[0]] = (l.flatten(1)[:, keep[k]], u.flatten(1)[:, keep[k]])
        old = relu_of.get(pre)
        if old is not None and old in fixed.alphas:
            alphas[op.name] = fixed.alphas[old].flatten(1)[:, keep[k]].contiguous()
            inputs[op.name] = op.inputs[0]
    return small, _Fixed(bounds, alphas, fixed.lower, inputs), lo.reshape(-1), hi.reshape(-1)


def _after_halvings(engine: BoundEngine, bounds: dict, halvings: list[str]) -> dict:
    """A batch's ``bounds`` (B, *shape; the root's, cut at the splits) with every op after the
    first halved nonlinearity input bounded again, IBP then CROWN at nonlinearity inputs, each
    intersected with what it had. Unlike a ReLU split, which reaches the layers after it through
    its multiplier, a halving narrows only its neuron's lines, and the intervals after it (fixed
    at the root's, often several times wider) would keep the gaps of their own lines: a search on
    a two-layer sigmoid network stalled 0.0006 below the root's bound after 115,000 subdomains.
    Sound: each bound holds on the subdomain, and so does their intersection."""
    first = min(engine.graph.index[n] for n in halvings)
    out = dict(bounds)
    with torch.no_grad():
        for op in engine.ops[first + 1:]:
            l, u = engine.interval(op, out)
            if op.name in out:
                l, u = intersect((l, u), out[op.name])
            if op.name in engine.preact and op.name not in engine._exact:
                l, u = engine._crown_tightened(op, l, u, out)
            out[op.name] = (l, u)
    return out


def _bound_fixed(engine: BoundEngine, domains: list[_Domain], C: torch.Tensor, rows, fixed: _Fixed,
                 goal: float = math.inf):
    """``_bound`` in beta-CROWN's setting (see ``_Fixed``). The records: ``warm`` (B, P), each
    subdomain's best slopes and split multipliers (``_Fixed.pack``) for its children to start
    from, and ``branch``, the neuron each would split next (``branching._branching``)."""
    B = len(domains)
    lo = torch.stack([d.lo for d in domains])
    hi = torch.stack([d.hi for d in domains])
    names = {n for d in domains for n in d.splits}
    zeros = {n: torch.zeros(engine.by_name[n].shape, dtype=torch.int32 if n in engine.halvable else torch.int8)
             for n in names}
    splits = {n: torch.stack([d.splits.get(n, zeros[n]) for d in domains]) for n in names}
    ball = spread(ball_of(fixed.bounds), B)  # an L1/L2 region: the same ball for every subdomain
    bounds = {"input": with_ball(lo, hi, ball)}
    empty = torch.zeros(B, dtype=torch.bool)
    for n, (l, u) in fixed.bounds.items():
        if n == "input":
            continue
        l, u = l.expand((B,) + l.shape[1:]), u.expand((B,) + u.shape[1:])
        if n in splits and n in engine.halvable:  # the pieces of the root's interval (never empty)
            l, u = halved(l, u, splits[n])
        elif n in splits:
            l, u = cut_at_splits(l, u, splits[n])
            empty |= (l > u).flatten(1).any(1)
        bounds[n] = (l, u)
    halvings = [n for n in splits if n in engine.halvable]
    if halvings:
        bounds = _after_halvings(engine, bounds, halvings)
    out = engine.graph.output
    A0 = C[None].expand(B, -1, -1).reshape((B, C.shape[0]) + engine.by_name[out].shape)
    # the parameters are optimised in float32 (half the time of float64 on a CPU); the bound is
    # then evaluated once in float64 with them: sound for any slopes in [0, 1] and betas >= 0
    fast = {n: (l.float(), u.float()) for n, (l, u) in bounds.items()}
    if ball is not None:
        fast["input"] = BallBox(*fast["input"], ball)  # (minimised over in the coefficients' dtype)
    A0_fast = A0.float()
    # every parameter of the batch lives in one (B, P) float32 tensor (``_Fixed.pack``'s layout),
    # the slopes, multipliers and mix are views of it: one Adam update and one clamp per step
    start = torch.stack([fixed.start if d.warm is None else d.warm for d in domains])
    P = fixed.default.numel()
    flat = start[:, :P].clone()
    state = None  # Adam's moments and step counts, per subdomain (ADAM_STATE)
    if start.shape[1] > P:
        state = ([start[:, P:2 * P]], [start[:, 2 * P:3 * P]], start[:, 3 * P:])
    lr, low_end, high_end, row_of = fixed.columns(engine)
    signs = {n: splits[n].float()[:, None] for n in splits if f"beta:{n}" in fixed.shapes}
    flipped = {n: -s for n, s in signs.items()}
    # a halved neuron's interval [l, u] (valid on the subdomain) as two constraints, z - l >= 0
    # and u - z >= 0, with multipliers b_l, b_u >= 0 (``halve:<input>``): the bound of
    # objective - b_l (z - l) - b_u (u - z), <= the objective on the subdomain, so sound for any
    # b >= 0, and through them the box's concretisation sees the halving (beta-CROWN's split
    # terms, with constants): without them, a two-layer tanh network on 30 inputs stalled at 0.002
    # below its goal after 85,000 subdomains
    halving = {n: (bounds[n], (splits[n] >= 2)[:, None]) for n in halvings if f"halve:{n}" in fixed.shapes}

    def halving_terms(params: dict, dtype) -> tuple[dict, torch.Tensor | float]:
        """The halvings' coefficients at their inputs (B, S, *shape) and constants (B, S)."""
        coeff, const = {}, 0.0
        for n, ((l, u), on) in halving.items():
            b = params[f"halve:{n}"].to(dtype) * on.unsqueeze(2).to(dtype)  # (B, S, 2, *shape)
            coeff[n] = b[:, :, 1] - b[:, :, 0]
            const = const + (b[:, :, 0] * l.to(dtype)[:, None] - b[:, :, 1] * u.to(dtype)[:, None]).flatten(2).sum(-1)
        return coeff, const
    best = flat.clone()  # per subdomain and row: the best iterate's
    if fixed.shapes and BETA_STEPS:
        optimiser = Adam([flat], lr=lr, state=state)
        top, cache = None, {}  # the relaxations' parts that the slopes do not change, kept between steps
        # a dense chain: the bound and its gradient written out (``dense``), not through autograd
        chain = DenseChain.of(engine)
        chain_batch = None
        if chain is not None:
            chain_batch = chain.batch(fast, fixed.facets, fixed.mix)
        flat.requires_grad_(chain_batch is None)
        steps = BETA_STEPS if chain_batch is None else DENSE_BETA_STEPS
        least = BETA_MIN_STEPS if chain_batch is None else DENSE_BETA_MIN_STEPS
        closed_before = -1
        for step in range(steps + 1):
            optimiser.zero_grad()
            params = fixed.views(flat)
            alphas = {n: params[f"alpha:{n}"] for n in fixed.alphas}
            mix = {n: params[f"mix:{n}"] for n in fixed.mix}
            # multipliers only where some subdomain of the batch has a split (elsewhere they stay 0)
            betas = {n: params[f"beta:{n}"] * flipped[n] for n in signs}
            terms, constant = halving_terms(params, torch.float32)
            betas |= terms
            if chain_batch is not None:
                with torch.no_grad():
                    value, grads = chain.value_and_grad(chain_batch, A0_fast, alphas, betas, mix)
            else:
                value = engine.backward(out, A0_fast, fast, alphas, betas=betas, cache=cache, facets=fixed.facets,
                                        mix=mix) + constant
            with torch.no_grad():
                better = torch.ones_like(value, dtype=torch.bool) if top is None else value > top
                top = value.detach() if top is None else torch.maximum(top, value)
                best = torch.where(better if better.shape[1] == 1 else better[:, row_of], flat, best)
                reached = reduce_rows(top.double(), *rows)
                closed = int((reached > goal).sum())
            if step == steps or closed == len(domains) or (chain_batch is None and not value.requires_grad):
                break  # (no parameter reaches the bound: a batch without splits on a net without ReLUs)
            # past the minimum, only while the last step proved more subdomains
            if step >= least and closed <= closed_before:
                break
            closed_before = closed
            if chain_batch is None:
                (-value.sum()).backward()
            else:  # the gradient of -sum(value); a split term is -beta * sign, so d/d beta = -sign * d/d term
                for n in signs:
                    grads[f"beta:{n}"] = grads[f"beta:{n}"] * flipped[n]
                flat.grad = fixed.pack(grads, len(domains), missing=0.0).neg_()
            optimiser.step()
            with torch.no_grad():
                flat.clamp_(min=low_end, max=high_end)
        flat = flat.detach()
        if state is not None:
            state = ([optimiser.m[0]], [optimiser.v[0]], optimiser.t)
    # the bound from each subdomain's best iterate; its children start from the last one (WARM_FROM_LAST)
    params = fixed.views(best)
    alphas = {n: params[f"alpha:{n}"].double() for n in fixed.alphas}
    betas = {n: -params[f"beta:{n}"].double() * signs[n].double() for n in signs}
    terms, constant = halving_terms(params, torch.float64)
    betas |= terms
    mix = {n: params[f"mix:{n}"].double() for n in fixed.mix}
    record: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        low = engine.backward(out, A0, bounds, alphas, record=record, betas=betas, facets=fixed.facets,
                              mix=mix) + constant
        worst = _deciding_row(low, *rows)
        coeffs = {name: a[torch.arange(B), worst] for name, a in record.items() if name != "input"}
        kept = flat if WARM_FROM_LAST else best
        if state is not None:
            kept = torch.cat([kept, state[0][0], state[1][0], state[2].expand(B, 1)], 1)
        k = branching.FSB_CANDIDATES if DenseChain.of(engine) is None else branching.FSB_DENSE_CANDIDATES
        candidates = branching._branching(engine, fixed, coeffs, splits, k, bounds)
        if k > 1:
            open_ = (reduce_rows(low, *rows) <= goal) & ~empty  # the others are not split
            candidates = [c if bool(o) else c[:1] for c, o in zip(candidates, open_)]
            pick = branching._estimated if branching.FSB_FIRST_ORDER else branching._filtered
            candidates = pick(engine, fixed, fast, A0_fast, {n: params[f"alpha:{n}"] for n in fixed.alphas},
                              {n: params[f"beta:{n}"] * flipped[n] for n in signs} |
                              halving_terms(params, torch.float32)[0],
                              {n: params[f"mix:{n}"] for n in fixed.mix}, candidates, rows)
        else:
            candidates = [c[0] if c else None for c in candidates]
        found = {"warm": kept, "branch": candidates}
    low = torch.where(empty[:, None], torch.full_like(low, math.inf), low)
    return reduce_rows(low, *rows), found, empty
