"""Binding a spec to a model: inputs fitted to the model's shape, labels, the domain, references.

Everything checked here can only be checked once the model is known, and every complaint still
points at the spec line it is about (a label out of range, a domain of the wrong length, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nnspec.errors import DataError, SpecError
from nnspec.models.inputs import InputSet, fit_to_model, load_input_set
from nnspec.models.model import Model
from nnspec.properties.spec import Property, SpecModule


@dataclass(frozen=True)
class BoundInputs:
    x: torch.Tensor  # (N, *input_shape)
    labels: torch.Tensor  # (N,) long
    label_source: str  # "data" | "predicted"
    ids: tuple[str, ...]
    lower: torch.Tensor  # (n,) flattened domain
    upper: torch.Tensor


def bind_inputs(module: SpecModule, index: int, model: Model) -> BoundInputs:
    spec = module.input_sets[index]
    raw: InputSet = load_input_set(spec)
    x = fit_to_model(raw.x, model.input_shape, str(spec.span), model.name)
    xt = torch.from_numpy(np.ascontiguousarray(x))
    lower, upper = domain_of(module, model)
    flat = xt.reshape(len(xt), -1)
    outside = ((flat < lower - 1e-6) | (flat > upper + 1e-6)).any(dim=1)
    if bool(outside.any()):
        i = int(outside.nonzero()[0])
        where = module.domain.span if module.domain else spec.span
        what = "the declared domain" if module.domain else "the default domain [0, 1]"
        raise DataError(f"{where}: input {raw.ids[i]} lies outside {what}"
                        + ("" if module.domain else "; declare the domain with 'domain [lo, hi]'"))
    if raw.labels is not None:
        labels = torch.from_numpy(raw.labels.astype(np.int64))
        bad = (labels < 0) | (labels >= model.n_outputs)
        if bool(bad.any()):
            j = int(bad.nonzero()[0])
            raise SpecError.at(spec.labels.span, f"label {int(labels[j])} of {raw.ids[j]} is out of range: "
                                                 f"{model.name} has {model.n_outputs} outputs")
        source = "data"
    else:
        labels = model.predict(xt) if len(xt) else torch.zeros(0, dtype=torch.long)
        source = "predicted"
    return BoundInputs(xt, labels, source, raw.ids, lower, upper)


def domain_of(module: SpecModule, model: Model) -> tuple[torch.Tensor, torch.Tensor]:
    n = model.n_inputs
    if module.domain is None:
        return torch.zeros(n), torch.ones(n)
    d = module.domain
    if not d.per_dimension:
        return torch.full((n,), d.lower[0]), torch.full((n,), d.upper[0])
    if len(d.lower) != n:
        raise SpecError.at(d.span, f"the domain has {len(d.lower)} pairs but {model.name} has {n} input dimensions")
    return torch.tensor(d.lower), torch.tensor(d.upper)


def check_property(prop: Property, model: Model) -> None:
    """Label and output indices that only the model can judge."""
    expr = prop.expression
    index = getattr(expr, "target_label", None)
    if index is None:
        index = getattr(expr, "index", None)
    if index is not None and index >= model.n_outputs:
        raise SpecError.at(prop.span, f"label {index} out of range: {model.name} has {model.n_outputs} outputs")
    window = prop.region.window
    if window is not None:
        shape = model.input_shape
        if len(shape) < 2 or window.row + window.height > shape[-2] or window.col + window.width > shape[-1]:
            raise SpecError.at(prop.span, f"window({window.row}, {window.col}, {window.height}, {window.width}) "
                                          f"does not fit the input shape {tuple(shape)}")


def reference_inputs(prop: Property, module: SpecModule, bound: BoundInputs, model: Model) -> torch.Tensor | None:
    if prop.reference_input is not None:
        if prop.reference_input >= len(bound.x):
            raise SpecError.at(prop.span, f"reference input {prop.reference_input} out of range: "
                                          f"the input set has {len(bound.x)} inputs")
        return bound.x[prop.reference_input].expand_as(bound.x).clone()
    if prop.reference_file is not None:
        path = Path(prop.reference_file)
        if not path.is_file():
            raise SpecError.at(prop.span, f"reference file not found: {path}")
        try:
            arr = np.load(path, allow_pickle=False).astype(np.float32)
        except Exception as err:
            raise SpecError.at(prop.span, f"cannot read reference {path} ({err})") from None
        arr = fit_to_model(arr.reshape((1,) + arr.shape) if arr.size == model.n_inputs else arr,
                           model.input_shape, str(prop.span), model.name)[:1]
        return torch.from_numpy(arr).expand_as(bound.x).clone()
    return None
