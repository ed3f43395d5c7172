"""Sound lower bounds of the safe radius that any backend can attach to its results.

Interval bound propagation (``nnspec.solvers.ibp``) certifies a box radius around the centre when
the property's violations are those of a logit margin: a confidence gap read on logits, or read on
probabilities with margin 0 (softmax keeps the order of the logits, so p_l < p_t exactly when
z_l < z_t). That radius is a proved
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
    if not (isinstance(expr, ConfidenceGap) and outputs_are_logits
            and (expr.reading == "logits" or expr.margin == 0)):
        return None, "no interval bound: it covers confidence gaps on logits (or on probabilities with margin 0)"
    target = {"label": expr.target_label, "least_likely": int(centre_out.argmin()), "untargeted": None}[expr.target]
    try:
        r = certified_radius(model.module, model.input_shape, x0.reshape(-1), label, radius, lower, upper,
                             target=target, scale=model._scale, shift=model._shift, threshold=expr.margin, free=free)
    except (ValueError, RuntimeError) as err:  # no rule for a layer, or shapes it cannot follow: no bound
        return None, f"no interval bound ({str(err).splitlines()[0] if str(err) else type(err).__name__})"
    return r, f"{METHOD} certifies a box of radius {r:.4g} around the centre"
