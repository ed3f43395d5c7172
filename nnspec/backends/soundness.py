"""Sound lower bounds of the safe radius that any backend can attach to its results.

Interval bound propagation (``nnspec.solvers.ibp``) certifies a box radius around the centre when
the property's s is the logit margin (a confidence gap read on logits); that radius is a proved
lower bound of the safe radius in L-inf, L2 and L1 alike (each ball lies in the box). Where IBP does
not apply (another expression, an operator without an interval rule) the answer is None and says why.
"""

from __future__ import annotations

import torch

from nnspec.models.model import Model
from nnspec.properties.expressions import ConfidenceGap
from nnspec.solvers.ibp import certified_radius

METHOD = "interval bound propagation"


def ibp_lower(model: Model, expr, outputs_are_logits: bool, x0: torch.Tensor, label: int, centre_out: torch.Tensor,
              radius: float, lower: torch.Tensor, upper: torch.Tensor,
              free: torch.Tensor | None = None) -> tuple[float | None, str]:
    """(certified radius, note), or (None, why not)."""
    if not (isinstance(expr, ConfidenceGap) and expr.reading == "logits" and outputs_are_logits):
        return None, "no interval bound: it covers confidence gaps read on logits"
    target = {"label": expr.target_label, "least_likely": int(centre_out.argmin()), "untargeted": None}[expr.target]
    try:
        r = certified_radius(model.module, model.input_shape, x0.reshape(-1), label, radius, lower, upper,
                             target=target, scale=model._scale, shift=model._shift, threshold=expr.margin, free=free)
    except ValueError as err:
        return None, f"no interval bound ({err})"
    return r, f"{METHOD} certifies a box of radius {r:.4g} around the centre"
