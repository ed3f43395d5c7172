"""Properties that read probabilities, proved through the softmax on the logits before it.

p = softmax(z). Every probability property nnspec proves is a conjunction of requirements on the
logits z (``requirements``), each of two kinds:

- ``ExpSumBelow``: c - sum_k w_k exp(D_k @ z) >= 0 with w_k > 0.
  p_i >= t is one (D_k = e_k - e_i for k != i, w = 1, c = 1/t - 1). So is p_l - p_t >= mu: divide
  e^z_l - e^z_t - mu sum_k e^z_k >= 0 by e^z_l (D_k = e_k - e_l, w_t = 1 + mu, w_k = mu for the
  others, c = 1 - mu); with mu < 0 the others' terms are >= 0 and are dropped, which only lowers
  the left side (sound, no longer exact). An untargeted gap is one requirement per other label.
- ``LogSumExpAbove``: LSE(z) - a @ z + c >= 0, LSE(z) = log sum_k exp(z_k).
  KL(q || p) >= tau is one (a = q, c = sum q log q - tau; KL to uniform: q = 1/m); p_i <= t is one
  (log p_i = z_i - LSE(z): a = e_i, c = log t).

An output formula's comparisons over probabilities are conditions c @ p + d > 0: a threshold when
one probability appears, else a sum of exponentials with terms of both signs (``_probability_atom``);
each is an alternative in its violation disjunct's group, beside its atoms over the logits.

The exponentials become ops of the graph: ``ExpHead`` follows the logits with
y = exp(min(D z, cap)) (``graph.BoundGraph.from_module(head=...)``; exp's relaxation is the chord
above and the parallel tangent below, like softplus's), and a requirement is then a row linear in
the graph's outputs [z, y] (``rows``). So every method bounds it as it bounds a logit margin:
interval bounds, CROWN, alpha-CROWN, and branch and bound, which also halves exp's intervals
(``relax.halved``) and converges on the exact value. The caps keep exp's input below
MAX_EXPONENT; for a sum below c, any cap >= log(c / w_k) keeps the requirement exact (past it,
both sides fail), so a sum's row holds exactly where its requirement does, and branch and
bound's candidates on it are candidates for the property.

A log-sum-exp requirement is proved by any row of its group (``radius.reduce_rows``): its tangent
planes LSE(z0) + softmax(z0) @ (z - z0) - a @ z + c, which lie below it everywhere (LSE is
convex), at the centre's logits scaled by TANGENT_SCALES, and z_k - a @ z + c (LSE >= max z);
and its sum of exponentials sum_k exp((e_k - a) @ z) >= exp(-c), where capping only lowers the
sum (sound). Those rows are not exact, so a point where they fail is no candidate.

Floating point: a tangent row asks for FLOAT32_ROWS * eps * (1 + max |z at the centre|) = delta
times the L1 norm of its coefficients more; a sum scales its constant by exp(-2 delta) (or
exp(2 delta) for a bound from below) and its added terms by exp(-4 delta) (every D_k has L1 norm
<= 2, so each exponential moves by at most the factor exp(2 delta)). So a row proved on float64
logits also holds for logits that the model's float32 arithmetic moves by delta; the linear
properties' guard in ``radius`` comes on top.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nnspec.properties.expressions import ConfidenceGap, KLDivergence, OutputThreshold
from nnspec.properties.formulas import OutputFormula

# the tangent planes of LSE touch at the centre's logits times these (0: the uniform point)
TANGENT_SCALES = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
# the head's exponentials are capped at most here (exp(709) is float64's largest); a sum of
# exponentials that needs a higher cap to stay exact is left unprovable
MAX_EXPONENT = 700.0
FLOAT32_ROWS = 64


@dataclass(frozen=True)
class LogSumExpAbove:
    """LSE(z) - a @ z + c >= 0."""

    a: torch.Tensor  # (m,)
    c: float


@dataclass(frozen=True)
class ExpSumBelow:
    """c + sum_j v_j exp(E_j @ z) - sum_k w_k exp(D_k @ z) >= 0, every w_k, v_j > 0 (``bonus``:
    (E, v), or none). ``exact``: it holds exactly where the property does (False where terms were
    dropped, which only lowers the left side)."""

    D: torch.Tensor  # (K, m)
    w: torch.Tensor  # (K,)
    c: float
    exact: bool = True
    bonus: tuple[torch.Tensor, torch.Tensor] | None = None


@dataclass(frozen=True)
class Linear:
    """c @ z + d > 0 over the logits (an output formula's atom, refuted)."""

    c: torch.Tensor  # (m,)
    d: float


@dataclass(frozen=True)
class Constant:
    """A requirement that holds for every z (or for none)."""

    holds: bool


Requirement = LogSumExpAbove | ExpSumBelow | Constant


class NotProbability(ValueError):
    """The expression does not read probabilities in a way these rows cover."""


def reads_probabilities(expr, outputs_are_logits: bool = True) -> bool:
    """Whether proving ``expr`` goes through the softmax: a probability threshold, a confidence gap
    on probabilities with a margin, a KL divergence, or an output formula with ``prob`` terms (any
    formula, on a model that gives probabilities)."""
    return (isinstance(expr, KLDivergence)
            or (isinstance(expr, OutputThreshold) and expr.fn == "prob")
            or (isinstance(expr, ConfidenceGap) and expr.reading == "probabilities" and expr.margin != 0)
            or (isinstance(expr, OutputFormula) and (expr.reads_probabilities() or not outputs_are_logits)))


def differences(m: int, base: int, others: list[int]) -> torch.Tensor:
    """Rows e_j - e_base (len(others), m): the exponents z_j - z_base."""
    D = torch.zeros(len(others), m, dtype=torch.float64)
    for k, j in enumerate(others):
        D[k, j] += 1.0
        D[k, base] -= 1.0
    return D


def requirements(expr, m: int, label: int, centre_z: torch.Tensor, reference_p: torch.Tensor | None = None,
                 outputs_are_logits: bool = True, least_likely: int | None = None) -> list:
    """The conjunction of requirements on the logits z that is ``expr`` >= 0 (its safe side, the
    boundary included). ``centre_z``: the logits at the centre (the least likely label there,
    unless ``least_likely`` gives it: the one the searches read, from the model's outputs);
    ``reference_p``: the reference distribution of a KL to a reference. An output formula gives
    one list of alternatives per disjunct of its violation set (any refuted atom refutes it),
    ``outputs_are_logits`` False: its every term reads the probabilities. Raises NotProbability
    (or formulas.NotLinear)."""
    if isinstance(expr, OutputFormula):
        form = expr.linear_form(m, label, outputs_are_logits, probabilities=True)
        return [[Linear(torch.tensor(a.c, dtype=torch.float64), a.d) if a.over == "y" else
                 _probability_atom(torch.tensor(a.c, dtype=torch.float64), a.d, label, centre_z) for a in conj]
                for conj in form]
    if isinstance(expr, KLDivergence):
        if expr.reference is None:
            q = torch.full((m,), 1.0 / m, dtype=torch.float64)
        elif reference_p is None:
            raise NotProbability("the reference distribution is not known here")
        else:
            q = reference_p.double().reshape(-1)
        entropy_term = float((q * torch.log(q.clamp_min(1e-30))).sum())  # sum q log q (0 log 0 = 0)
        return [LogSumExpAbove(q, entropy_term - expr.threshold)]
    if isinstance(expr, OutputThreshold) and expr.fn == "prob":
        i = label if expr.index is None else expr.index
        t = expr.threshold
        if expr.cmp in ("<", "<="):  # p_i <= t: z_i - LSE(z) <= log t
            if t >= 1.0 or t <= 0.0:
                return [Constant(t >= 1.0)]
            return [LogSumExpAbove(torch.eye(m, dtype=torch.float64)[i], math.log(t))]
        if t <= 0.0 or t >= 1.0:  # p_i >= t: sum_{k != i} exp(z_k - z_i) <= 1/t - 1
            return [Constant(t <= 0.0)]
        others = [k for k in range(m) if k != i]
        return [ExpSumBelow(differences(m, i, others), torch.ones(len(others), dtype=torch.float64), 1.0 / t - 1.0)]
    if isinstance(expr, ConfidenceGap) and expr.reading == "probabilities":
        mu = float(expr.margin)
        least = int(centre_z.argmin()) if least_likely is None else least_likely
        target = {"label": expr.target_label, "least_likely": least, "untargeted": None}[expr.target]
        targets = [k for k in range(m) if k != label] if target is None else [target]
        out: list[Requirement] = []
        for t in targets:
            if t == label:  # p_l - p_l = 0 >= mu
                out.append(Constant(mu <= 0))
                continue
            if 1.0 + mu <= 0.0:  # p_l - p_t >= -1 >= mu always
                out.append(Constant(True))
                continue
            # (1 - mu) - (1 + mu) e^(z_t - z_l) - mu sum_{k != l, t} e^(z_k - z_l) >= 0
            terms = [t] + ([k for k in range(m) if k not in (label, t)] if mu > 0 else [])
            w = torch.tensor([1.0 + mu] + [mu] * (len(terms) - 1), dtype=torch.float64)
            out.append(ExpSumBelow(differences(m, label, terms), w, 1.0 - mu, exact=mu >= 0))
        return out
    raise NotProbability(f"no probability rows for {type(expr).__name__}")


def _probability_atom(c: torch.Tensor, d: float, label: int, centre_z: torch.Tensor) -> Requirement:
    """The requirement c @ p + d >= 0 (an atom c @ p + d <= 0 refuted). One probability is a
    threshold; otherwise, as sum p = 1, it is sum_k w_k p_k >= 0 with w_k = c_k + d, that is
    sum_k w_k e^z_k >= 0: divided by e^z_b for the positive term b largest at the centre,
    w_b + sum_{w_j > 0, j != b} w_j e^(z_j - z_b) - sum_{w_k < 0} |w_k| e^(z_k - z_b) >= 0."""
    nonzero = c.nonzero().flatten().tolist()
    if not nonzero:
        return Constant(d > 0)
    m = c.numel()
    if len(nonzero) == 1:
        i = nonzero[0]
        t = -d / float(c[i])
        (req,) = requirements(OutputThreshold("prob", i, ">=" if c[i] > 0 else "<=", t), m, label, centre_z)
        return req
    w = c + d
    positive, negative = (w > 0).nonzero().flatten(), (w < 0).nonzero().flatten()
    if len(negative) == 0 or len(positive) == 0:
        return Constant(len(positive) > 0)
    b = int(positive[torch.argmax(torch.log(w[positive]) + centre_z.double()[positive])])
    others = [int(k) for k in positive if k != b]
    bonus = (differences(m, b, others), w[others]) if others else None
    return ExpSumBelow(differences(m, b, negative.tolist()), -w[negative], float(w[b]), bonus=bonus)


class ExpHead(nn.Module):
    """z -> [z, exp(min(D z, cap))]: the logits, then the exponentials the rows read. The cap is
    written cap - relu(cap - D z), so that every op has a rule and exp's input stays below it."""

    def __init__(self, D: torch.Tensor, caps: torch.Tensor):
        super().__init__()
        self.register_buffer("D", D.double())
        self.register_buffer("caps", caps.double())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = torch.flatten(z, 1)
        d = F.linear(z, self.D)
        return torch.cat([z, torch.exp(torch.sub(self.caps, F.relu(torch.sub(self.caps, d))))], dim=1)

    def key(self) -> tuple:
        return tuple(self.D.flatten().tolist()) + tuple(self.caps.tolist())


@dataclass
class Rows:
    """What a proof must show, over the graph's outputs followed by ``head``'s (None: the logits
    alone): for every group g, some row r of g has C[r] @ y + d[r] > 0. ``exact``: the rows hold
    exactly where the property does (up to the float32 guard), so a point that fails them is a
    candidate counterexample; tangent planes are not exact."""

    C: torch.Tensor
    d: torch.Tensor
    groups: torch.Tensor
    head: ExpHead | None
    exact: bool


def rows(reqs: list, centre_z: torch.Tensor, model_eps: float = 2.0 ** -23) -> Rows:
    """The rows that prove a conjunction: each item a requirement, or a list of alternatives
    (requirements, or ``Linear`` rows over the logits) any one of which proves it (an output
    formula's violation disjunct, refuted by any of its atoms); one group per item, none for one
    that always holds. Sums of exponentials read the head's outputs; log-sum-exps give the
    tangent planes' rows and the sum sum_k exp((e_k - a) @ z) >= exp(-c) (LSE(z) - a @ z is its
    log), which branch and bound tightens by halving the exponentials' intervals."""
    centre_z = centre_z.double().reshape(-1)
    m = centre_z.numel()
    delta = FLOAT32_ROWS * model_eps * (1.0 + float(centre_z.abs().max()))
    terms: dict[tuple, float] = {}  # a D row -> its cap
    groups = []  # per group: rows over z, their offsets, and exp rows [([(D row, weight)], offset)]
    exact = True
    below_caps: list[Linear] = []  # (rows that keep capped exponents exact: groups of their own)

    def term(row: torch.Tensor, cap: float) -> tuple:
        key = tuple(row.tolist())
        terms[key] = max(terms.get(key, -math.inf), min(cap, MAX_EXPONENT))
        return key

    for item in reqs:
        alternatives = item if isinstance(item, list) else [item]
        if any(isinstance(r, Constant) and r.holds for r in alternatives):
            continue
        fixed_C, fixed_d, sums = [], [], []
        for req in alternatives:
            if isinstance(req, Constant):
                continue
            if isinstance(req, Linear):
                fixed_C.append(req.c.double()[None])
                fixed_d.append(torch.tensor([req.d - delta * float(req.c.abs().sum())], dtype=torch.float64))
            elif isinstance(req, ExpSumBelow) and req.bonus is not None:
                # the bonus terms can outweigh any cap's term, so every cap is MAX_EXPONENT and the
                # region must keep the subtracted exponents below it: one more group each (capping
                # the bonus terms only lowers the left side)
                exact = exact and req.exact
                used = [(term(D, MAX_EXPONENT), -float(w)) for D, w in zip(req.D, req.w)]
                # (float32: with c e^(-2 delta) and the bonus e^(-4 delta) here, the sum holds for
                # logits moved by delta, each term moving by at most the factor e^(2 delta))
                used += [(term(E, MAX_EXPONENT), float(v) * math.exp(-4 * delta)) for E, v in zip(*req.bonus)]
                sums.append((used, req.c * math.exp(-2 * delta) if req.c > 0 else req.c * math.exp(2 * delta)))
                below_caps.extend(Linear(-D, MAX_EXPONENT - 1) for D in req.D)
            elif isinstance(req, ExpSumBelow):
                # exact with any cap >= log(c / w) (past it both sides fail); beyond MAX_EXPONENT: unprovable
                exact = exact and req.exact
                if req.c > 0 and all(math.log(req.c / float(w)) + 1 <= MAX_EXPONENT for w in req.w):
                    sums.append(([(term(D, math.log(req.c / float(w)) + 1), -float(w)) for D, w in zip(req.D, req.w)],
                                 req.c * math.exp(-2 * delta)))
            else:
                exact = False
                C, d = tangent_rows(req, centre_z)
                fixed_C.append(C)
                fixed_d.append(d - delta * C.abs().sum(dim=1))
                diffs = torch.eye(m, dtype=torch.float64) - req.a[None]
                zero = diffs.abs().sum(dim=1) == 0  # a term exp(0) = 1
                # (beyond MAX_EXPONENT the sum's row is left out: its exponentials would be capped below it)
                target = math.exp(-req.c + 2 * delta) - float(zero.sum()) if -req.c < MAX_EXPONENT else math.inf
                if 0 < target and math.log(target) + 1 <= MAX_EXPONENT:
                    sums.append(([(term(D, math.log(target) + 1), 1.0) for D in diffs[~zero]], -target))
        if not fixed_C and not sums:  # nothing can prove it: a row that is never > 0
            fixed_C, fixed_d = [torch.zeros(1, m, dtype=torch.float64)], [torch.full((1,), -1.0, dtype=torch.float64)]
        groups.append((fixed_C, fixed_d, sums))
    for row in below_caps:
        groups.append(([row.c.double()[None]], [torch.tensor([row.d - delta * float(row.c.abs().sum())],
                                                             dtype=torch.float64)], []))
    keys = list(terms)
    K = len(keys)
    index = {k: i for i, k in enumerate(keys)}
    Cs, ds, gs = [], [], []
    for g, (fixed_C, fixed_d, sums) in enumerate(groups):
        C = torch.cat(fixed_C) if fixed_C else torch.zeros(0, m, dtype=torch.float64)
        d = torch.cat(fixed_d) if fixed_d else torch.zeros(0, dtype=torch.float64)
        C = torch.cat([C, torch.zeros(len(C), K, dtype=torch.float64)], dim=1)
        for used, offset in sums:
            row = torch.zeros(1, m + K, dtype=torch.float64)
            for key, w in used:
                row[0, m + index[key]] += w
            C, d = torch.cat([C, row]), torch.cat([d, torch.tensor([offset], dtype=torch.float64)])
        Cs.append(C)
        ds.append(d)
        gs.append(torch.full((len(d),), g, dtype=torch.long))
    if not groups:  # every requirement holds everywhere: one row that is always 1
        Cs, ds, gs = [torch.zeros(1, m + K, dtype=torch.float64)], [torch.ones(1, dtype=torch.float64)], \
            [torch.zeros(1, dtype=torch.long)]
    head = None if K == 0 else ExpHead(torch.tensor(keys, dtype=torch.float64),
                                       torch.tensor([terms[k] for k in keys], dtype=torch.float64))
    return Rows(torch.cat(Cs), torch.cat(ds), torch.cat(gs), head, exact)


def tangent_rows(req: LogSumExpAbove, centre_z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows (C, d) with C @ z + d <= LSE(z) - a @ z + c for every z: tangent planes at the centre
    scaled by TANGENT_SCALES, and z_k - a @ z + c for every k."""
    rows_, offsets = [], []
    for s in TANGENT_SCALES:
        z0 = centre_z * s
        lse = torch.logsumexp(z0, dim=0)
        p0 = torch.softmax(z0, dim=0)
        rows_.append(p0 - req.a)
        offsets.append(float(lse - p0 @ z0) + req.c)
    eye = torch.eye(centre_z.numel(), dtype=torch.float64)
    C = torch.cat([torch.stack(rows_), eye - req.a[None]])
    d = torch.cat([torch.tensor(offsets, dtype=torch.float64), torch.full((len(eye),), req.c, dtype=torch.float64)])
    return C, d
