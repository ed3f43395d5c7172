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
    top = torch.finfo(torch.get_default_dtype()).max  # the inputs' dtype (float32)
    for v in (*d.lower, *d.upper):
        if abs(v) > top:
            raise SpecError.at(d.span, f"domain bound {v:g} is too large for the inputs' "
                                       f"{str(torch.get_default_dtype()).removeprefix('torch.')} values "
                                       f"(at most {top:.4g} in size)")
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


# ---------------------------------------------------------------- box regions


def _box_side(side, n: int, where: str, what: str) -> np.ndarray:
    """One side of a box as float64 (K, n): K = 1 (one box) or one row per input."""
    from nnspec.properties.regions import BoxBound

    assert isinstance(side, BoxBound)
    if side.kind == "value":
        return np.full((1, n), side.value, dtype=np.float64)
    if side.kind == "list":
        vals = np.asarray(side.value, dtype=np.float64)
        if len(vals) != n:
            raise DataError(f"{where}: the box {what} has {len(vals)} values but the model has {n} input dimensions")
        return vals[None]
    path = Path(side.value)
    if not path.is_file():
        raise DataError(f"{where}: box file not found: {path}")
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            key = side.key or what
            if key not in loaded.files:
                raise DataError(f"{where}: {path.name} has no array '{key}' (it has {', '.join(loaded.files)})")
            arr = loaded[key]
        else:
            arr = loaded
        arr = np.asarray(arr, dtype=np.float64)
    except DataError:
        raise
    except Exception as err:
        raise DataError(f"{where}: cannot read the box {what} from {path} ({err})") from None
    if arr.size == n:
        arr = arr.reshape(1, n)
    elif arr.ndim >= 1 and arr.size == arr.shape[0] * n:
        arr = arr.reshape(arr.shape[0], n)
    else:
        raise DataError(f"{where}: the box {what} in {path.name} has shape {arr.shape}; the model has {n} input "
                        f"dimensions (give {n} values, or one row of {n} per input)")
    if not np.isfinite(arr).all() and what == "width":
        raise DataError(f"{where}: the box width in {path.name} is not finite")
    return arr


def box_bounds(prop: Property, module: SpecModule, model: Model, centres: torch.Tensor | None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """The property's box as (lower, upper), each (K, n) in the model's dtype (K = 1 or one per
    input), cut to the declared domain. Bounds are rounded to the model's dtype as the spec states
    them: an input that the model reads as lying on a bound is inside."""
    box = prop.boxes[0]
    n = model.n_inputs
    where = str(prop.span)
    if box.relative:
        if centres is None:
            raise SpecError.at(prop.span, "box(width=w) is around the inputs: add an 'inputs' statement, or "
                                          "give the box as box(lower, upper)")
        w = _box_side(box.width, n, where, "width")
        if (w < 0).any():
            raise DataError(f"{where}: a box width is negative")
        x = centres.reshape(len(centres), -1).double().numpy()
        if w.shape[0] not in (1, len(x)):
            raise DataError(f"{where}: the box width has {w.shape[0]} rows for {len(x)} inputs")
        lo, hi = x - w, x + w
    else:
        lo, hi = _box_side(box.lower, n, where, "lower"), _box_side(box.upper, n, where, "upper")
        if lo.shape[0] != hi.shape[0] and 1 not in (lo.shape[0], hi.shape[0]):
            raise DataError(f"{where}: the box has {lo.shape[0]} lower rows but {hi.shape[0]} upper rows")
        lo, hi = np.broadcast_arrays(lo, hi) if lo.shape != hi.shape else (lo, hi)
        if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
            raise DataError(f"{where}: the box bounds must be finite")
        bad = np.argwhere(lo > hi)
        if len(bad):
            k, i = bad[0]
            raise DataError(f"{where}: empty box: lower {lo[k, i]:g} > upper {hi[k, i]:g} in dimension {i}")
    if module.domain is not None:
        dlo, dhi = (t.double().numpy()[None] for t in domain_of(module, model))
        lo, hi = np.maximum(lo, dlo), np.minimum(hi, dhi)
        if (lo > hi).any():
            raise SpecError.at(prop.span, "the box lies outside the declared domain")
    lower = torch.from_numpy(np.ascontiguousarray(lo)).to(model.dtype)
    upper = torch.from_numpy(np.ascontiguousarray(hi)).to(model.dtype)
    return lower, upper


def bind_box_centres(prop: Property, module: SpecModule, model: Model) -> BoundInputs:
    """Inputs for a spec without an inputs statement: each box's midpoint (its label: the model's
    prediction there, for formulas that mention 'label')."""
    lower, upper = box_bounds(prop, module, model, None)
    mid = ((lower.double() + upper.double()) / 2).to(model.dtype)
    x = mid.reshape((len(mid),) + tuple(model.input_shape))
    ids = ("box centre",) if len(mid) == 1 else tuple(f"box[{i}] centre" for i in range(len(mid)))
    labels = model.predict(x)
    return BoundInputs(x, labels, "predicted", ids, lower, upper)


def with_box(prop: Property, module: SpecModule, model: Model, bound: BoundInputs) -> BoundInputs:
    """The input set bound to a box property: lower/upper become the box (per input where the
    box is), and every centre must lie in its box."""
    lower, upper = box_bounds(prop, module, model, bound.x)
    if lower.shape[0] not in (1, len(bound.x)):
        raise DataError(f"{prop.span}: the box has {lower.shape[0]} rows for {len(bound.x)} inputs")
    flat = bound.x.reshape(len(bound.x), -1).to(model.dtype)
    outside = ((flat < lower) | (flat > upper)).any(dim=1)
    if bool(outside.any()):
        i = int(outside.nonzero()[0])
        raise DataError(f"{prop.span}: input {bound.ids[i]} lies outside its box (a box's centre is the input)")
    return BoundInputs(bound.x, bound.labels, bound.label_source, bound.ids, lower, upper)
