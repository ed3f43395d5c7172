"""The elementwise pieces of a bound pass: each nonlinearity's linear relaxation on an interval
(ReLU and leaky ReLU: the triangle with a free lower slope; sigmoid, tanh, softplus and ELU: two
parallel lines at the chord's slope; sign: constants), an interval under branch and bound's splits, two sound
intervals' intersection, and a linear function's closed-form minimum over a box. The engine's
passes (``nnspec.bounds.engine``), alpha-CROWN (``nnspec.bounds.alpha``) and branch and bound's
dense chains (``nnspec.bounds.dense``) share them."""

from __future__ import annotations

import math

import torch

from nnspec.bounds.graph import Op


def relaxation(op: Op, l: torch.Tensor, u: torch.Tensor, alpha: torch.Tensor | None = None):
    """Lines al*x + bl <= f(x) <= au*x + bu on [l, u], elementwise: (al, bl, au, bu)."""
    kind = op.kind
    if kind in ("relu", "leaky_relu"):
        return relu_lines(op, relu_parts(op, l, u), alpha)
    if kind == "sign":  # nondecreasing: constant bounds sign(l) <= sign(x) <= sign(u)
        zero = torch.zeros_like(l)
        return zero, torch.sign(l), zero, torch.sign(u)
    if kind in SMOOTH:
        return _parallel_chord(op, l, u)
    raise ValueError(f"no relaxation for {kind}")  # pragma: no cover


def relu_parts(op: Op, l: torch.Tensor, u: torch.Tensor) -> tuple:
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


def relu_lines(op: Op, parts: tuple, alpha: torch.Tensor | None):
    """(al, bl, au, bu) from ``relu_parts``, the lower slope ``alpha`` (B, S, *shape) where given."""
    active, inactive, au, bu, crown, zero = parts
    if alpha is None:
        return crown, zero, au, bu
    s = op.slope if op.kind == "leaky_relu" else 0.0
    shape = (alpha.shape[0], 1) + tuple(active.shape[1:])
    al = torch.where(active.reshape(shape), 1.0, torch.where(inactive.reshape(shape), s, alpha))
    return al.to(au.dtype), zero, au, bu


def _parallel_chord(op: Op, l: torch.Tensor, u: torch.Tensor):
    """Both lines with the chord's slope k, their offsets the exact min and max of f(x) - k x on
    [l, u]: at the ends or where f'(x) = k (closed form for each function, ELU's kink included).
    Sound for convex, concave and mixed intervals alike; on a convex f (softplus, ELU with
    alpha <= 1) the upper line is the chord itself and the lower one the tangent parallel to it."""
    f, deriv, stationary, absolute = _smooth(op)
    width = u - l
    k = torch.where(width > 1e-9, (f(u) - f(l)) / width.clamp_min(1e-300), deriv((l + u) / 2))
    values = [torch.where((x >= l) & (x <= u), f(x) - k * x, f(l) - k * l) for x in [l, u] + stationary(k)]
    stacked = torch.stack(values)
    slack = absolute + 1e-12 * (1 + stacked.abs().amax(0))
    return k, stacked.amin(0) - slack, k, stacked.amax(0) + slack


# softplus as torch computes it returns x itself past x = 20, within e^-20 of log(1 + e^x): an
# absolute widening of its lines' offsets covers that
CONVEX_SLACK = 1e-8


def _smooth(op: Op):
    """(f, f', the points where f'(x) = k, an absolute widening of the offsets) for op's kind."""
    F = torch.nn.functional
    if op.kind == "sigmoid":
        def stationary(k):  # s (1 - s) = k
            root = torch.sqrt((1 - 4 * k).clamp_min(0))
            return [_logit(((1 + sign * root) / 2)) for sign in (1, -1)]
        return torch.sigmoid, lambda x: torch.sigmoid(x) * (1 - torch.sigmoid(x)), stationary, 0.0
    if op.kind == "tanh":
        def stationary(k):  # 1 - t^2 = k
            t = torch.sqrt((1 - k).clamp_min(0)).clamp(max=1 - 1e-16)
            return [torch.atanh(t), -torch.atanh(t)]
        return torch.tanh, lambda x: 1 - torch.tanh(x) ** 2, stationary, 0.0
    if op.kind == "erf":
        def stationary(k):  # 2 / sqrt(pi) e^(-x^2) = k
            t = torch.sqrt(torch.log((2 / math.sqrt(math.pi)) / k.clamp_min(1e-300)).clamp_min(0))
            return [t, -t]
        return torch.erf, lambda x: 2 / math.sqrt(math.pi) * torch.exp(-x * x), stationary, 0.0
    if op.kind == "softplus":
        return F.softplus, torch.sigmoid, lambda k: [_logit(k)], CONVEX_SLACK
    if op.kind == "exp":  # (only in a property's head, whose cap keeps the input below 700)
        return torch.exp, torch.exp, lambda k: [torch.log(k.clamp_min(1e-300))], 0.0
    if op.kind in VALLEYS:  # x Phi(x), x sigmoid(x): f' monotone on (-inf, -r], [-r, r], [r, inf)
        f, deriv = VALLEYS[op.kind][:2]
        return f, deriv, lambda k: _valley_stationary(op.kind, k), 0.0
    alpha = op.slope  # elu: alpha e^x = k on x < 0, and the kink at 0
    return (lambda x: F.elu(x, alpha), lambda x: torch.where(x < 0, alpha * torch.exp(x), 1.0),
            lambda k: [torch.log((k / alpha).clamp_min(1e-300)), torch.zeros_like(k)], CONVEX_SLACK)


def _gelu_deriv(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1 + torch.erf(x / math.sqrt(2))) + x * torch.exp(-x * x / 2) / math.sqrt(2 * math.pi)


def _silu_deriv(x: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(x)
    return s * (1 + x * (1 - s))


# x times a smooth step: one valley, f' rising on [-r, r] and falling outside (to 0 on the left,
# to 1 on the right). Per kind: f, f', r (where f'' = 0), "far" (past +-far f is 0 or x within
# 1e-24, so f - kx is linear there to that and its extremes on a piece beyond are the piece's
# ends, far itself being a candidate), and the least value's point (f' = 0)
VALLEYS = {
    "gelu": (torch.nn.functional.gelu, _gelu_deriv, math.sqrt(2), 40.0, -0.7517915246935645),
    "silu": (torch.nn.functional.silu, _silu_deriv, 2.399357280515467, 60.0, -1.278464542761074),
}
VALLEY_STEPS = 52


def _valley_stationary(kind: str, k: torch.Tensor) -> list[torch.Tensor]:
    """Points where f'(x) = k, one per piece on which f' is monotone, by VALLEY_STEPS bisection
    steps (a piece is at most 58 wide: within 2e-14 of the root, where f - kx is within 1e-27 of
    its extreme, far inside the offsets' widening), and +-far. Where k is out of a piece's range
    the result is that piece's end: a point of the interval like any other. The offsets take the
    extremes over the ends and these points; an extra point inside [l, u] can only be >= the true
    minimum of f - kx and <= its maximum, while every true stationary point is among them (to
    rounding, which the offsets' 1e-12 relative widening covers)."""
    _, deriv, r, far, _ = VALLEYS[kind]
    out = []
    for a, b, rising in ((-far, -r, False), (-r, r, True), (r, far, False)):
        lo, hi = torch.full_like(k, a), torch.full_like(k, b)
        for _ in range(VALLEY_STEPS):
            mid = (lo + hi) / 2
            below = deriv(mid) < k
            go_right = below if rising else ~below
            lo, hi = torch.where(go_right, mid, lo), torch.where(go_right, hi, mid)
        out.append((lo + hi) / 2)
    return out + [torch.full_like(k, -far), torch.full_like(k, far)]


def valley_interval(kind: str, l: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[min, max] of GELU or SiLU on [l, u]: each decreases up to its least value's point and
    increases after, so the maximum is at an end and the minimum at an end or at that point (its
    value less 1e-12 for the digits of the constant). Both widened by 1e-12 (1 + |value|): torch's
    float64 functions are monotone on each side only to rounding (an interior point of GELU came
    out 1e-18 above both ends)."""
    f, argmin = VALLEYS[kind][0], VALLEYS[kind][4]
    fl, fu = f(l), f(u)
    inside = (l <= argmin) & (u >= argmin)
    least = f(torch.tensor(argmin, dtype=l.dtype)) - 1e-12
    low, high = torch.where(inside, least, torch.minimum(fl, fu)), torch.maximum(fl, fu)
    return low - 1e-12 * (1 + low.abs()), high + 1e-12 * (1 + high.abs())


def _logit(s: torch.Tensor) -> torch.Tensor:
    s = s.clamp(1e-300, 1 - 1e-16)
    return torch.log(s) - torch.log1p(-s)


def cut_at_splits(l: torch.Tensor, u: torch.Tensor, split: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds of a nonlinearity input under branch and bound's splits (+1: the neuron is >= 0,
    -1: <= 0, 0: free). A split that contradicts the bounds leaves lo > hi: an empty subdomain."""
    return torch.where(split > 0, l.clamp(min=0), l), torch.where(split < 0, u.clamp(max=0), u)


# the smooth nonlinearities (their relaxation is ``_parallel_chord``'s): branch and bound splits
# one by halving its input's interval (``halved``), which narrows its lines' gap about fourfold
SMOOTH = ("sigmoid", "tanh", "erf", "softplus", "elu", "gelu", "silu", "exp")
MAX_HALVINGS = 24  # a neuron's interval is halved at most this often (a code below 2**25)


def halved(l: torch.Tensor, u: torch.Tensor, code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds of a smooth nonlinearity's input under branch and bound's halvings: ``code``
    numbers the piece of [l, u] a subdomain keeps as a binary heap does (0 or 1: all of it; 2c
    and 2c + 1: the lower and upper half of piece c). A piece at depth d with index i is
    [l + w i / 2^d, l + w (i + 1) / 2^d], w = u - l: the fractions are exact in float64, a piece's
    ends are its halves' outer ends bit for bit (2i / 2^(d+1) is i / 2^d), the halves share their
    middle, the outermost ends are l and u themselves, and rounding is monotone, so the halves of a
    piece cover it exactly."""
    code = code.to(torch.int64).clamp(min=1)
    powers = 2 ** torch.arange(1, MAX_HALVINGS + 2, dtype=torch.int64)
    depth = (code[..., None] >= powers).sum(-1)
    scale = (2 ** depth).to(l.dtype)
    index = (code - 2 ** depth).to(l.dtype)
    w = u - l
    low = torch.where(index == 0, l, l + w * (index / scale))
    high = torch.where(index + 1 == scale, u, l + w * ((index + 1) / scale))
    return low, high


def intersect(a: tuple, b: tuple) -> tuple:
    """The intersection of two sound intervals (lo, hi); rounding could cross them by an ulp."""
    l, u = torch.maximum(a[0], b[0]), torch.minimum(a[1], b[1])
    return l, torch.maximum(u, l)


def concretise(a: torch.Tensor, l: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """min over x in [l, u] of sum(a * x): a (B, S, *shape), l and u (B, *shape) -> (B, S)."""
    a = a.flatten(2)
    l, u = l.reshape(l.shape[0], 1, -1), u.reshape(u.shape[0], 1, -1)
    return (a.clamp(min=0) * l + a.clamp(max=0) * u).sum(-1)


def signed_rows(n: int, rows: torch.Tensor | None) -> torch.Tensor:
    """Objectives (2k, n) for the lower and upper bounds of the neurons ``rows`` of n (all with
    None): +e_i for each, then -e_i for each."""
    eye = torch.eye(n, dtype=torch.float64)
    if rows is not None:
        eye = eye[rows]
    return torch.cat([eye, -eye])


def numel(shape) -> int:
    return int(math.prod(shape)) if shape else 1
