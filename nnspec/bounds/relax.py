"""The elementwise pieces of a bound pass: each nonlinearity's linear relaxation on an interval
(ReLU and leaky ReLU: the triangle with a free lower slope; sigmoid and tanh: two parallel lines
at the chord's slope; sign: constants), an interval under branch and bound's splits, two sound
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
    if kind in ("sigmoid", "tanh"):
        return _parallel_chord(kind, l, u)
    if kind in ("softplus", "elu"):
        return _convex_lines(op, l, u)
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


# softplus as torch computes it returns x itself past x = 20, within e^-20 of log(1 + e^x): an
# absolute widening of each line's offset covers that, and float64's rounding
CONVEX_SLACK = 1e-8


def _convex_lines(op: Op, l: torch.Tensor, u: torch.Tensor):
    """Softplus's or ELU's (alpha <= 1: convex) lines on [l, u]: both at the chord's slope k, the upper
    one the chord (the max of f(x) - k x on a convex f is at an end), the lower one the tangent
    where f'(x) = k (closed form; for ELU also its kink at 0): each offset the exact extreme of
    f(x) - k x over the ends and those points, widened by CONVEX_SLACK."""
    if op.kind == "softplus":
        def f(x):
            return torch.nn.functional.softplus(x)

        def stationary(k):  # sigmoid(x) = k
            k = k.clamp(1e-300, 1 - 1e-16)
            return [torch.log(k) - torch.log1p(-k)]
    else:
        alpha = op.slope

        def f(x):
            return torch.nn.functional.elu(x, alpha)

        def stationary(k):  # alpha e^x = k on x < 0, and the kink
            return [torch.log((k / alpha).clamp_min(1e-300)), torch.zeros_like(k)]
    width = u - l
    k = torch.where(width > 1e-9, (f(u) - f(l)) / width.clamp_min(1e-300),
                    (f(u + 1e-6) - f(l - 1e-6)) / (width + 2e-6))
    values = [torch.where((x >= l) & (x <= u), f(x) - k * x, f(l) - k * l) for x in [l, u] + stationary(k)]
    stacked = torch.stack(values)
    slack = CONVEX_SLACK + 1e-12 * stacked.abs().amax(0)
    return k, stacked.amin(0) - slack, k, stacked.amax(0) + slack


def cut_at_splits(l: torch.Tensor, u: torch.Tensor, split: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds of a nonlinearity input under branch and bound's splits (+1: the neuron is >= 0,
    -1: <= 0, 0: free). A split that contradicts the bounds leaves lo > hi: an empty subdomain."""
    return torch.where(split > 0, l.clamp(min=0), l), torch.where(split < 0, u.clamp(max=0), u)


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
