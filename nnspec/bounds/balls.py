"""Linear functions minimised over an L1, L2 or L0 ball cut to a box: the input end of a bound pass.

A backward pass (CROWN, alpha-CROWN) ends with a linear function a @ x + c of the input, valid on
the region the intermediate bounds were computed for; its minimum over the input region is the
bound. Over a box that minimum is closed form (``relax.concretise``). A ball of radius r in L2
or L1 around x0 is much smaller than its bounding box in many dimensions (the box's corner is
sqrt(n) r away in L2), and proving the box proves far less than the ball: so where the region is
a ball, the minimum is taken over the ball cut to the box [lo, hi] (the domain and a window's
fixed dimensions, lo <= x0 <= hi), with delta = x - x0:

- L1: min a @ delta over |delta|_1 <= r, delta in [lo - x0, hi - x0] is a fractional knapsack:
  each dimension gives |a_i| per unit of the budget r, up to its room in a's falling direction
  (x0_i - lo_i where a_i > 0, hi_i - x0_i where a_i < 0); the budget goes to the largest |a_i|
  first. Exact.
- L2: by weak duality, for every lambda > 0,
  min a @ delta over the set >= sum_i min over delta_i in [lo_i', hi_i'] of (a_i delta_i +
  lambda/2 delta_i^2) - lambda r^2 / 2, each term at delta_i = clip(-a_i / lambda). Any lambda
  gives a sound bound; the best one, where |delta(lambda)|_2 = r, is found by bisection on
  log lambda (BISECTIONS steps, without gradients: the bound at a fixed lambda is what is
  differentiated, which alpha-CROWN may do). Exact up to the bisection.
- L0 (at most k = floor(r) coordinates leave the centre, each anywhere in the box): each
  coordinate alone lowers a @ x by |a_i| times its room in a's falling direction, and changes of
  different coordinates add up, so the minimum takes the k largest of those gains (a sort). Exact.
  (The box of an L0 ball is the whole box [lo, hi]: the callers pass that.)

Both are also bounded below by the box's own minimum (the ball cut to the box lies in the box),
and the larger of the two is returned. The intermediate bounds of a pass use the same minimum,
so every layer's bounds are over the ball, the first layer's included (over a box IBP is exact
there; over a ball it is not). IBP's stay over the box: sound, looser.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nnspec.bounds.relax import concretise

NORMS = ("l1", "l2", "l0")
BISECTIONS = 24  # steps on log lambda over LAMBDA_SPAN: the bound is flat in lambda at its optimum
LAMBDA_SPAN = 30.0  # lambda searched in [lambda_max e^-30, lambda_max]; below that the box's minimum holds


@dataclass(frozen=True)
class Ball:
    """An L1, L2 or L0 ball around ``centre`` (B, n) of ``radius`` (B,), one per box of a batch (L0:
    at most floor(radius) coordinates differ from the centre)."""

    norm: str
    centre: torch.Tensor
    radius: torch.Tensor

    def __post_init__(self):
        if self.norm not in NORMS:
            raise ValueError(f"no ball concretisation for {self.norm!r} (one of {', '.join(NORMS)})")


class BallBox(tuple):
    """An input's bounds (lo, hi) that also carry the ball they bound: unpacks as the pair, so
    every interval rule reads the box, and a backward pass reaching the input minimises over the
    ball cut to the box (``minimum``)."""

    ball: Ball

    def __new__(cls, lo: torch.Tensor, hi: torch.Tensor, ball: Ball):
        box = super().__new__(cls, (lo, hi))
        box.ball = ball
        return box

    def __reduce__(self):  # (pickled with its ball, e.g. to a forked search)
        return BallBox, (self[0], self[1], self.ball)


def ball_of(bounds: dict) -> Ball | None:
    """The ball of a bounds dict's input (None: the box itself)."""
    return getattr(bounds.get("input"), "ball", None)


def spread(ball: Ball | None, B: int) -> Ball | None:
    """A single ball (one centre) for each of B boxes of a batch (branch and bound's subdomains)."""
    if ball is None:
        return None
    return Ball(ball.norm, ball.centre.reshape(1, -1).expand(B, -1), ball.radius.reshape(1).expand(B))


def with_ball(lo: torch.Tensor, hi: torch.Tensor, ball: Ball | None):
    """The input's bounds: a plain (lo, hi), or a ``BallBox`` where there is a ball."""
    return (lo, hi) if ball is None else BallBox(lo, hi, ball)


def minimum(a: torch.Tensor, bounds) -> torch.Tensor:
    """min of sum(a * x) over the input region ``bounds`` ((lo, hi) or a ``BallBox``):
    a (B, S, *shape), lo and hi (B, *shape) -> (B, S)."""
    if getattr(bounds, "ball", None) is None:
        return concretise(a, *bounds)
    return minimum_and_point(a, bounds)[0]


def minimum_and_point(a: torch.Tensor, bounds) -> tuple[torch.Tensor, torch.Tensor]:
    """``minimum`` and where it is reached, (B, S) and (B, S, n) flat: the gradient of the minimum
    in a (for a ball, the dual's minimiser at its lambda), for passes that differentiate by hand
    (``dense.DenseChain``)."""
    lo, hi = bounds
    B, S = a.shape[:2]
    flat = a.flatten(2)
    lo, hi = lo.reshape(B, 1, -1).to(flat.dtype), hi.reshape(B, 1, -1).to(flat.dtype)
    corner = torch.where(flat > 0, lo, hi)
    box = (flat * corner).sum(-1)
    ball = getattr(bounds, "ball", None)
    if ball is None:
        return box, corner
    x0 = ball.centre.to(flat.dtype).reshape(B, 1, -1)
    down, up = (x0 - lo).clamp(min=0), (hi - x0).clamp(min=0)  # room below the centre, and above
    r = ball.radius.to(flat.dtype).reshape(B, 1)
    if ball.norm == "l1":
        delta = _knapsack(flat, down, up, r)
        value = (flat * (x0 + delta)).sum(-1)
    elif ball.norm == "l0":
        delta = _largest_gains(flat, down, up, r)
        value = (flat * (x0 + delta)).sum(-1)
    else:  # the dual's value, below the minimum for any lambda (|delta| <= r at the one chosen)
        delta, lam = _l2_dual(flat, down, up, r)
        value = (flat * (x0 + delta)).sum(-1) + 0.5 * lam * (delta.pow(2).sum(-1) - r.pow(2))
    use_box = box > value
    return torch.where(use_box, box, value), torch.where(use_box[..., None], corner, x0 + delta)


def _knapsack(a: torch.Tensor, down: torch.Tensor, up: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """The delta (B, S, n) that minimises a @ delta over |delta|_1 <= r and -down <= delta <= up:
    the budget r to the largest |a_i| first, each up to its room in a's falling direction."""
    room = torch.where(a > 0, down, up).expand_as(a)
    order = torch.argsort(a.detach().abs(), dim=-1, descending=True)
    sorted_room = room.gather(-1, order)
    before = torch.cumsum(sorted_room, dim=-1) - sorted_room  # the budget the larger gains take first
    take = torch.minimum((r[..., None] - before).clamp(min=0), sorted_room)
    step = torch.zeros_like(room).scatter(-1, order, take)
    return torch.where(a > 0, -step, step)


def _largest_gains(a: torch.Tensor, down: torch.Tensor, up: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """The delta (B, S, n) that minimises a @ delta over at most floor(r) nonzero coordinates with
    -down <= delta <= up: the coordinates with the largest |a_i| times their room in a's falling
    direction go to the end of that room."""
    room = torch.where(a > 0, down, up).expand_as(a)
    gain = a.detach().abs() * room
    order = torch.argsort(gain, dim=-1, descending=True)
    rank = torch.empty_like(order).scatter_(-1, order, torch.arange(a.shape[-1]).expand_as(order))
    step = torch.where(rank < torch.floor(r)[..., None], room, torch.zeros_like(room))
    return torch.where(a > 0, -step, step)


def _l2_dual(a: torch.Tensor, down: torch.Tensor, up: torch.Tensor, r: torch.Tensor) -> tuple:
    """The Lagrangian dual of min a @ delta over |delta|_2 <= r and -down <= delta <= up: its
    minimiser delta(lambda) = clip(-a / lambda) (B, S, n) and lambda (B, S), lambda found by
    bisection on log lambda where |delta(lambda)|_2 = r (the dual is valid at any lambda > 0)."""
    lo, hi = -down, up

    def step(lam: torch.Tensor) -> torch.Tensor:
        return torch.minimum(torch.maximum(-a / lam[..., None], lo), hi)

    with torch.no_grad():
        # without the box, lambda = |a|_2 / r puts -a / lambda on the sphere; the box only shortens it
        top = a.detach().norm(dim=-1) / r.clamp(min=1e-300)
        top = torch.where(top > 0, top, torch.ones_like(top))
        left, right = torch.log(top) - LAMBDA_SPAN, torch.log(top)
        for _ in range(BISECTIONS):
            mid = (left + right) / 2
            outside = step(torch.exp(mid)).pow(2).sum(-1) > r.pow(2)
            left, right = torch.where(outside, mid, left), torch.where(outside, right, mid)
        lam = torch.exp(right)  # |delta(lambda)| <= r there
    return step(lam), lam


def ball_norm(norm: str) -> str | None:
    """The ball a region's norm gives the bound engine: l1, l2 and l0 have one; linf is its box."""
    return norm if norm in NORMS else None

