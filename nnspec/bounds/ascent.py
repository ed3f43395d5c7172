"""Adam (Kingma and Ba 2015) for the bound engine's slope and multiplier ascent.

torch.optim.Adam is the same algorithm, but constructing the first torch optimiser in a process
imports torch's compiler stack: 2.5 s on the 2-core machine, paid by every VNN-COMP instance (a
quarter of an 8-10 s budget) and every `nnspec check` that asks for alpha-CROWN or branch and bound.
The bound engine needs only the plain update on a few tensors, so it is written out here.
"""

from __future__ import annotations

import torch


class Adam:
    """``zero_grad`` / ``step`` like torch.optim.Adam (no weight decay, no amsgrad)."""

    def __init__(self, params: list[torch.Tensor], lr: float | torch.Tensor, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, state: tuple | None = None):
        """``state``: (m, v, t), moments to go on from (a list of tensors like ``params`` each)
        and the steps they have taken: an int, or a tensor that broadcasts against the
        parameters (e.g. (B, 1): one count per row of a (B, P) parameter, whose rows went on
        from different runs)."""
        self.params = list(params)
        self.lr, (self.b1, self.b2), self.eps = lr, betas, eps
        if state is None:
            self.m = [torch.zeros_like(p) for p in self.params]
            self.v = [torch.zeros_like(p) for p in self.params]
            self.t = 0
        else:
            m, v, self.t = state
            self.m, self.v = [x.clone() for x in m], [x.clone() for x in v]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.t = self.t + 1
        c1, c2 = 1 - self.b1 ** self.t, 1 - self.b2 ** self.t
        live = [(p, m, v) for p, m, v in zip(self.params, self.m, self.v) if p.grad is not None]
        if not live:
            return
        ps, ms, vs = (list(t) for t in zip(*live))
        gs = [p.grad for p in ps]
        if isinstance(self.lr, torch.Tensor) or isinstance(self.t, torch.Tensor):  # per element: one tensor at a time
            for p, m, v, g in zip(ps, ms, vs, gs):
                m.mul_(self.b1).add_(g, alpha=1 - self.b1)
                v.mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
                p.sub_(m.div(_denominator(v, c2, self.eps)).mul_(self.lr / c1))
            return
        if _FOREACH:  # the same arithmetic, one call per operation for all the tensors
            torch._foreach_mul_(ms, self.b1)
            torch._foreach_add_(ms, gs, alpha=1 - self.b1)
            torch._foreach_mul_(vs, self.b2)
            torch._foreach_addcmul_(vs, gs, gs, value=1 - self.b2)
            denominators = torch._foreach_div(vs, c2)
            torch._foreach_add_(denominators, self.eps * self.eps)
            torch._foreach_sqrt_(denominators)
            torch._foreach_addcdiv_(ps, ms, denominators, value=-self.lr / c1)
            return
        for p, m, v, g in zip(ps, ms, vs, gs):  # pragma: no cover - a torch without _foreach ops
            m.mul_(self.b1).add_(g, alpha=1 - self.b1)
            v.mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
            p.addcdiv_(m, _denominator(v, c2, self.eps), value=-self.lr / c1)


def _denominator(v: torch.Tensor, c2: float, eps: float) -> torch.Tensor:
    """sqrt(v / c2 + eps^2): Adam's sqrt(v / c2) + eps, to within eps, but never the square root of
    0, which torch's CPU kernel takes 6x as long over as a positive number's (2026-12-05, torch
    2.14: 273 us against 47 us for 105,000 floats; branch and bound's v is mostly zeros, for the
    stable neurons' slopes and the unsplit layers' multipliers)."""
    return (v / c2).add_(eps * eps).sqrt_()


# torch's multi-tensor ops (what torch.optim.Adam's foreach path uses): a step of branch and
# bound's dozen parameter tensors in one call per operation instead of one per tensor
_FOREACH = all(hasattr(torch, f"_foreach_{op}") for op in ("mul_", "add_", "addcmul_", "div", "sqrt_", "addcdiv_"))
