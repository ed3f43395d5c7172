"""Property expressions s(y) as pure batched tensor functions.

Each expression is bound to one centre input before a search (``bind``), which fixes what depends
on the centre: its label, the least likely label at the centre, a reference distribution. The bound
function maps model outputs ``(B, m)`` to ``s`` of shape ``(B,)``; ``s < 0`` is a violation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

SFunction = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True, slots=True)
class CentreContext:
    """What a bound expression may know about the centre input."""

    label: int
    centre_output: torch.Tensor  # (m,) raw model output at the centre
    reference_output: torch.Tensor | None = None  # (m,) raw model output at a reference input


def as_probabilities(outputs: torch.Tensor, outputs_are_logits: bool) -> torch.Tensor:
    return torch.softmax(outputs, dim=-1) if outputs_are_logits else outputs


def _read(outputs: torch.Tensor, reading: str, outputs_are_logits: bool) -> torch.Tensor:
    """The values a property reads: probabilities (softmax applied when needed) or raw logits."""
    if reading == "probabilities":
        return as_probabilities(outputs, outputs_are_logits)
    return outputs


@dataclass(frozen=True, slots=True)
class ConfidenceGap:
    """DeepQuant's confidence-interval expression s = f_l(y) - f_t(y) - margin.

    ``target`` is ``untargeted`` (t = the best other label at y itself, so that s < 0 exactly when
    another label beats l by more than -margin; the paper fixes t at the centre, which misses a
    third label overtaking), ``label`` (t given: targeted) or ``least_likely`` (t = argmin at the
    centre: the paper's Case 3).
    """

    target: str
    target_label: int | None
    margin: float
    reading: str  # probabilities | logits

    def bind(self, ctx: CentreContext, outputs_are_logits: bool) -> SFunction:
        label, margin, reading = ctx.label, self.margin, self.reading
        if self.target == "least_likely":
            fixed = int(torch.argmin(ctx.centre_output).item())
        else:
            fixed = self.target_label

        def s(outputs: torch.Tensor) -> torch.Tensor:
            values = _read(outputs, reading, outputs_are_logits)
            own = values[:, label]
            if fixed is None:
                others = values.clone()
                others[:, label] = -math.inf
                return own - others.max(dim=1).values - margin
            return own - values[:, fixed] - margin

        return s

    def describe(self) -> str:
        against = {"untargeted": "every other label", "least_likely": "the least likely label at the centre",
                   "label": f"label {self.target_label}"}[self.target]
        return f"{self.reading}[label] - max over {against} - {self.margin:g}"


@dataclass(frozen=True, slots=True)
class KLDivergence:
    """Uncertainty: s = KL(q || p(y)) - threshold, q uniform (DeepQuant Eqn. 8) or a reference.

    With q uniform this is exactly the paper's -(1/m) sum log(m p_l). For a reference input the
    paper's formula is not a divergence; nnspec uses the true KL(p(ref) || p(y)).
    """

    threshold: float
    reference: str | None  # None (uniform) | "file" | "input"

    def bind(self, ctx: CentreContext, outputs_are_logits: bool) -> SFunction:
        threshold = self.threshold
        q = None
        if self.reference is not None:
            assert ctx.reference_output is not None, "reference output must be bound"
            q = as_probabilities(ctx.reference_output[None], outputs_are_logits)[0]

        def s(outputs: torch.Tensor) -> torch.Tensor:
            if outputs_are_logits:
                log_p = torch.log_softmax(outputs, dim=-1)
            else:
                log_p = torch.log(outputs.clamp_min(1e-30))
            if q is None:
                m = outputs.shape[-1]
                kl = -log_p.mean(dim=-1) - math.log(m)
            else:
                kl = (q * (torch.log(q.clamp_min(1e-30)) - log_p)).sum(dim=-1)
            return kl - threshold

        return s

    def describe(self) -> str:
        q = "uniform" if self.reference is None else f"the {self.reference} reference distribution"
        return f"KL({q} || probabilities) - {self.threshold:g}"


@dataclass(frozen=True, slots=True)
class OutputThreshold:
    """Reachability: a class probability or logit stays below (``<``) or above (``>``) a threshold.

    s = threshold - v for ``<`` and v - threshold for ``>``; ``index`` None means the input's label.
    """

    fn: str  # prob | logit
    index: int | None
    cmp: str  # < | <= | > | >=
    threshold: float

    def bind(self, ctx: CentreContext, outputs_are_logits: bool) -> SFunction:
        index = ctx.label if self.index is None else self.index
        reading = "probabilities" if self.fn == "prob" else "logits"
        below = self.cmp in ("<", "<=")
        threshold = self.threshold

        def s(outputs: torch.Tensor) -> torch.Tensor:
            v = _read(outputs, reading, outputs_are_logits)[:, index]
            return threshold - v if below else v - threshold

        return s

    def describe(self) -> str:
        which = "label" if self.index is None else str(self.index)
        return f"{self.fn}({which}) {self.cmp} {self.threshold:g}"


@dataclass(frozen=True, slots=True)
class OutputValue:
    """A quantity, not a threshold: the value whose min and max over a region are wanted."""

    fn: str  # prob | logit
    index: int | None
    tolerance: float

    def bind(self, ctx: CentreContext, outputs_are_logits: bool) -> SFunction:
        index = ctx.label if self.index is None else self.index
        reading = "probabilities" if self.fn == "prob" else "logits"

        def value(outputs: torch.Tensor) -> torch.Tensor:
            return _read(outputs, reading, outputs_are_logits)[:, index]

        return value

    def describe(self) -> str:
        which = "label" if self.index is None else str(self.index)
        return f"range of {self.fn}({which}) to within {self.tolerance:g}"


Expression = ConfidenceGap | KLDivergence | OutputThreshold | OutputValue
