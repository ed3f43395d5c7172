"""What every backend receives and the protocol it implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

from nnspec.backends.options import BackendInfo
from nnspec.models.model import Model
from nnspec.properties.spec import Property
from nnspec.results.records import Outcome


@dataclass(frozen=True)
class BoundTask:
    """One property on P inputs, bound to a model: everything a backend needs, nothing about files.

    ``centres`` (P, *input_shape); ``labels`` (P,) long; ``lower``/``upper`` the domain, (n,)
    flattened; ``reference`` (P, *input_shape) reference inputs for KL to a reference, or None.
    """

    prop: Property
    centres: torch.Tensor
    labels: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor
    outputs_are_logits: bool
    options: dict[str, Any]
    reference: torch.Tensor | None = None


class Backend(Protocol):
    info: BackendInfo

    def run(self, task: BoundTask, model: Model) -> list[Outcome]:
        """One Outcome per centre, in order. Must count every query through ``model``."""
        ...
