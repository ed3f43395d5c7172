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
times the L1 norm of its coefficients more, a sum for the factor exp(2 delta) (every D_k has L1
norm <= 2), so that a row proved on float64 logits also holds for logits that the model's float32
arithmetic moves by delta; the linear properties' guard in ``radius`` comes on top.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nnspec.properties.expressions import ConfidenceGap, KLDivergence, OutputThreshold

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
    """c - sum_k w_k exp(D_k @ z) >= 0, every w_k > 0."""

    D: torch.Tensor  # (K, m)
    w: torch.Tensor  # (K,)
    c: float


@dataclass(frozen=True)
class Constant:
    """A requirement that holds for every z (or for none)."""

    holds: bool


Requirement = LogSumExpAbove | ExpSumBelow | Constant


class NotProbability(ValueError):
    """The expression does not read probabilities in a way these rows cover."""


def reads_probabilities(expr) -> bool:
    """Whether proving ``expr`` goes through the softmax: a probability threshold, a confidence gap
    on probabilities with a margin, or a KL divergence."""
    return (isinstance(expr, KLDivergence)
            or (isinstance(expr, OutputThreshold) and expr.fn == "prob")
            or (isinstance(expr, ConfidenceGap) and expr.reading == "probabilities" and expr.margin != 0))


def _differences(m: int, base: int, others: list[int]) -> torch.Tensor:
    D = torch.zeros(len(others), m, dtype=torch.float64)
    for k, j in enumerate(others):
        D[k, j] += 1.0
        D[k, base] -= 1.0
    return D


def requirements(expr, m: int, label: int, centre_z: torch.Tensor,
                 reference_p: torch.Tensor | None = None) -> list[Requirement]:
    """The conjunction of requirements on the logits z that is ``expr`` >= 0 (its safe side, the
    boundary included). ``centre_z``: the logits at the centre (for the least likely label);
    ``reference_p``: the reference distribution of a KL to a reference. Raises NotProbability."""
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
        return [ExpSumBelow(_differences(m, i, others), torch.ones(len(others), dtype=torch.float64), 1.0 / t - 1.0)]
    if isinstance(expr, ConfidenceGap) and expr.reading == "probabilities":
        mu = float(expr.margin)
        target = {"label": expr.target_label, "least_likely": int(centre_z.argmin()), "untargeted": None}[expr.target]
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
            out.append(ExpSumBelow(_differences(m, label, terms), w, 1.0 - mu))
        return out
    raise NotProbability(f"no probability rows for {type(expr).__name__}")


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


def rows(reqs: list[Requirement], centre_z: torch.Tensor, model_eps: float = 2.0 ** -23) -> Rows:
    """The rows that prove the requirements, one group each (none for one that always holds).
    Sums of exponentials read the head's outputs; log-sum-exps give the tangent planes' rows and,
    in the same group, the sum sum_k exp((e_k - a) @ z) >= exp(-c) (LSE(z) - a @ z is its log),
    which branch and bound tightens by halving the exponentials' intervals."""
    centre_z = centre_z.double().reshape(-1)
    m = centre_z.numel()
    delta = FLOAT32_ROWS * model_eps * (1.0 + float(centre_z.abs().max()))
    terms: dict[tuple, float] = {}  # a D row -> its cap
    pending = []  # per group: (fixed rows over z, their offsets, [(D row, weight)], offset of the exp row)

    def term(row: torch.Tensor, cap: float) -> tuple:
        key = tuple(row.tolist())
        terms[key] = max(terms.get(key, -math.inf), min(cap, MAX_EXPONENT))
        return key

    for req in reqs:
        if isinstance(req, Constant):
            if not req.holds:
                pending.append((torch.zeros(1, m, dtype=torch.float64), torch.full((1,), -1.0, dtype=torch.float64),
                                [], None))
            continue
        if isinstance(req, ExpSumBelow):
            # exact with any cap >= log(c / w) (past it both sides fail); beyond MAX_EXPONENT: unprovable
            if req.c <= 0 or any(math.log(req.c / float(w)) + 1 > MAX_EXPONENT for w in req.w):
                pending.append((torch.zeros(1, m, dtype=torch.float64), torch.full((1,), -1.0, dtype=torch.float64),
                                [], None))
                continue
            used = [(term(D, math.log(req.c / float(w)) + 1), -float(w)) for D, w in zip(req.D, req.w)]
            pending.append((torch.zeros(0, m, dtype=torch.float64), torch.zeros(0, dtype=torch.float64),
                            used, req.c * math.exp(-2 * delta)))
            continue
        C, d = _tangent_rows(req, centre_z)
        d = d - delta * C.abs().sum(dim=1)
        diffs = torch.eye(m, dtype=torch.float64) - req.a[None]
        zero = diffs.abs().sum(dim=1) == 0  # a term exp(0) = 1
        # (beyond MAX_EXPONENT the sum's row is left out: its exponentials would be capped below it)
        target = math.exp(-req.c + 2 * delta) - float(zero.sum()) if -req.c < MAX_EXPONENT else math.inf
        used = []
        if 0 < target and math.log(target) + 1 <= MAX_EXPONENT:
            used = [(term(D, math.log(target) + 1), 1.0) for D in diffs[~zero]]
        pending.append((C, d, used, -target if used else None))
    keys = list(terms)
    K = len(keys)
    index = {k: i for i, k in enumerate(keys)}
    Cs, ds, gs = [], [], []
    for g, (C, d, used, offset) in enumerate(pending):
        C = torch.cat([C, torch.zeros(len(C), K, dtype=torch.float64)], dim=1)
        if used:
            row = torch.zeros(1, m + K, dtype=torch.float64)
            for key, w in used:
                row[0, m + index[key]] += w
            C, d = torch.cat([C, row]), torch.cat([d, torch.tensor([offset], dtype=torch.float64)])
        Cs.append(C)
        ds.append(d)
        gs.append(torch.full((len(d),), g, dtype=torch.long))
    if not pending:  # every requirement holds everywhere: one row that is always 1
        Cs, ds, gs = [torch.zeros(1, m + K, dtype=torch.float64)], [torch.ones(1, dtype=torch.float64)], \
            [torch.zeros(1, dtype=torch.long)]
    head = None if K == 0 else ExpHead(torch.tensor(keys, dtype=torch.float64),
                                       torch.tensor([terms[k] for k in keys], dtype=torch.float64))
    exact = all(isinstance(r, (ExpSumBelow, Constant)) for r in reqs)
    return Rows(torch.cat(Cs), torch.cat(ds), torch.cat(gs), head, exact)


def _tangent_rows(req: LogSumExpAbove, centre_z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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
