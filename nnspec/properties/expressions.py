"""Property expressions s(y) as pure batched tensor functions.

Each expression is bound to a batch of P centre inputs before a search (``bind``), which fixes what
depends on each centre: its label, the least likely label there, a reference distribution. The
bound function maps model outputs ``(P, K, m)`` (K points around each of the P centres) to ``s``
of shape ``(P, K)``; ``s < 0`` is a violation. No per-sample Python loops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

SFunction = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Centres:
    """What bound expressions may know about the P centre inputs of one batched search.

    ``labels`` (P,) long; ``outputs`` (P, m) raw model outputs at the centres; ``reference``
    (P, m) raw outputs at each centre's reference input, for KL to a reference.
    """

    labels: torch.Tensor
    outputs: torch.Tensor
    reference: torch.Tensor | None = None


def as_probabilities(outputs: torch.Tensor, outputs_are_logits: bool) -> torch.Tensor:
    return torch.softmax(outputs, dim=-1) if outputs_are_logits else outputs


def _read(outputs: torch.Tensor, reading: str, outputs_are_logits: bool) -> torch.Tensor:
    """The values a property reads: probabilities (softmax applied when needed) or raw logits."""
    if reading == "probabilities":
        return as_probabilities(outputs, outputs_are_logits)
    return outputs


def _pick(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values (P, K, m), index (P,) -> values[p, :, index[p]] as (P, K)."""
    return values.gather(2, index.view(-1, 1, 1).expand(-1, values.shape[1], 1)).squeeze(2)


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

    def bind(self, centres: Centres, outputs_are_logits: bool) -> SFunction:
        labels, margin, reading = centres.labels, self.margin, self.reading
        if self.target == "least_likely":
            fixed = centres.outputs.argmin(dim=1)
        elif self.target == "label":
            fixed = torch.full_like(labels, self.target_label)
        else:
            fixed = None

        def s(outputs: torch.Tensor) -> torch.Tensor:
            values = _read(outputs, reading, outputs_are_logits)
            own = _pick(values, labels)
            if fixed is None:
                others = values.scatter(2, labels.view(-1, 1, 1).expand(-1, values.shape[1], 1), -math.inf)
                return own - others.amax(dim=2) - margin
            return own - _pick(values, fixed) - margin

        return s

    def toward(self, labels: torch.Tensor, outputs_are_logits: bool):
        """For an untargeted gap: s_j = f_l - f_j - margin toward given labels j, (A, K, m) outputs
        and (A, K) targets -> (A, K). s_j >= s everywhere, so s_j < 0 is a violation of s; a search
        on s_j reaches the region where label j wins even where another label is the closer
        runner-up at the start (a search on s follows that one)."""
        reading, margin = self.reading, self.margin

        def s(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            values = _read(outputs, reading, outputs_are_logits)
            return _pick(values, labels) - values.gather(2, targets[..., None]).squeeze(2) - margin

        return s

    def describe(self) -> str:
        r = self.reading
        other = {"untargeted": f"max over j != label of {r}[j]",
                 "least_likely": f"{r}[least likely label at the centre]",
                 "label": f"{r}[{self.target_label}]"}[self.target]
        return f"{r}[label] - {other} - {self.margin:g}"


@dataclass(frozen=True, slots=True)
class KLDivergence:
    """Uncertainty: s = KL(q || p(y)) - threshold, q uniform (DeepQuant Eqn. 8) or a reference.

    With q uniform this is exactly the paper's -(1/m) sum log(m p_l). For a reference input the
    paper's formula is not a divergence; nnspec uses the true KL(p(ref) || p(y)).
    """

    threshold: float
    reference: str | None  # None (uniform) | "file" | "input"

    def bind(self, centres: Centres, outputs_are_logits: bool) -> SFunction:
        threshold = self.threshold
        q = None
        if self.reference is not None:
            assert centres.reference is not None, "reference outputs must be bound"
            q = as_probabilities(centres.reference, outputs_are_logits)[:, None, :]  # (P, 1, m)

        def s(outputs: torch.Tensor) -> torch.Tensor:
            if outputs_are_logits:
                log_p = torch.log_softmax(outputs, dim=-1)
            else:
                log_p = torch.log(outputs.clamp_min(1e-30))
            if q is None:
                kl = -log_p.mean(dim=-1) - math.log(outputs.shape[-1])
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
    The boundary itself counts as safe (s = 0).
    """

    fn: str  # prob | logit
    index: int | None
    cmp: str  # < | <= | > | >=
    threshold: float

    def bind(self, centres: Centres, outputs_are_logits: bool) -> SFunction:
        index = centres.labels if self.index is None else torch.full_like(centres.labels, self.index)
        reading = "probabilities" if self.fn == "prob" else "logits"
        below = self.cmp in ("<", "<=")
        threshold = self.threshold

        def s(outputs: torch.Tensor) -> torch.Tensor:
            v = _pick(_read(outputs, reading, outputs_are_logits), index)
            return threshold - v if below else v - threshold

        return s

    def describe(self) -> str:
        v = f"{self.fn}({'label' if self.index is None else self.index})"
        if self.cmp in ("<", "<="):
            return f"{self.threshold:g} - {v}"
        return f"{v} - {self.threshold:g}"


@dataclass(frozen=True, slots=True)
class OutputValue:
    """A quantity, not a threshold: the value whose min and max over a region are wanted."""

    fn: str  # prob | logit
    index: int | None
    tolerance: float

    def bind(self, centres: Centres, outputs_are_logits: bool) -> SFunction:
        index = centres.labels if self.index is None else torch.full_like(centres.labels, self.index)
        reading = "probabilities" if self.fn == "prob" else "logits"

        def value(outputs: torch.Tensor) -> torch.Tensor:
            return _pick(_read(outputs, reading, outputs_are_logits), index)

        return value

    def describe(self) -> str:
        which = "label" if self.index is None else str(self.index)
        return f"{self.fn}({which})"


Expression = ConfidenceGap | KLDivergence | OutputThreshold | OutputValue
