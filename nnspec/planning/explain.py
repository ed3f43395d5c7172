"""A stable, human-readable rendering of what every property compiles to (golden-tested)."""

from __future__ import annotations

from pathlib import Path

from nnspec.backends import registry
from nnspec.planning.plan import Plan
from nnspec.properties.spec import InputSetSpec, SpecModule


def _inputs(spec: InputSetSpec) -> str:
    parts = [Path(spec.path).name]
    if spec.key:
        parts.append(f"key {spec.key}")
    if spec.first:
        parts.append(f"first {spec.first}")
    if spec.select:
        parts.append(f"select {list(spec.select)}")
    if spec.layout:
        parts.append(f"layout {spec.layout}")
    if spec.scale:
        parts.append(f"scale {spec.scale:g}")
    labels = {"none": "labels: predicted by the model at each centre", "predicted": "labels: predicted by the model",
              "key": f"labels: array {spec.labels.value}", "file": f"labels: file {Path(str(spec.labels.value)).name}",
              "list": f"labels: {list(spec.labels.value or [])}"}[spec.labels.kind]
    return ", ".join(parts) + f"; {labels}"


def explain(modules: list[SpecModule], plan: Plan) -> str:
    out: list[str] = []
    for module in modules:
        out.append(f"spec {module.file}")
        out.append(f"  model: {Path(module.model.path).name if module.model else '(from --model)'}"
                   f" (outputs {'logits' if module.outputs_are_logits else 'probabilities'})")
        for spec in module.input_sets:
            out.append(f"  inputs: {_inputs(spec)}")
            out.append(f"    values: {_values(spec)}")
        if module.domain is None:
            out.append("  domain: [0, 1] for every dimension (default)")
        elif not module.domain.per_dimension:
            out.append(f"  domain: [{module.domain.lower[0]:g}, {module.domain.upper[0]:g}] for every dimension")
        else:
            pairs = ", ".join(f"[{a:g}, {b:g}]" for a, b in zip(module.domain.lower, module.domain.upper))
            out.append(f"  domain: per dimension {pairs}")
        if module.normalization:
            n = module.normalization
            out.append(f"  normalize: mean {list(n.mean)} std {list(n.std)} (radii in the input space)")
        for name, value in module.parameters:
            out.append(f"  param {name} = {value}")
        for prop in module.properties:
            out.append(f"  property {prop.name} (line {prop.span.line}): {prop.kind}")
            if prop.kind == "range":
                out.append(f"    quantity: {prop.expression.describe()}, its min and max over the region "
                           f"(tolerance {prop.expression.tolerance:g})")
            elif prop.expression is not None:
                out.append(f"    s(y) = {prop.expression.describe()}   (s < 0 is a violation)")
            if prop.sweep:
                radii = ", ".join(f"{r:g}" for r in prop.sweep)
                out.append(f"    region: {prop.region.norm} ball swept over radii [{radii}], intersected with the domain")
            else:
                out.append(f"    region: {prop.region.describe()} intersected with the domain")
            reqs = ", ".join(r.describe() for r in prop.requirements) or "none (reported, never fails)"
            out.append(f"    require: {reqs}")
            tasks = [t for t in plan.tasks if t.module is module and t.prop.span == prop.span]
            if tasks:
                t = tasks[0]
                info = registry.info(t.backend)
                opts = ", ".join(f"{k}={_value(v)}" for k, v in t.options)
                out.append(f"    solver: {t.backend} ({'chosen by the spec' if t.chosen_by == 'spec' else 'chosen by the planner'}): {opts}")
                gives = ("the observed min and max, an enclosure the bound engine proves" if prop.kind == "range"
                         else ", ".join(info.capabilities.gives))
                out.append(f"    gives: {gives}; budget is per input")
    return "\n".join(out) + "\n"


def _values(spec: InputSetSpec) -> str:
    """What the run will see: the count and value range of the inputs after reading and scaling."""
    from nnspec.errors import DataError
    from nnspec.models.inputs import load_input_set

    try:
        data = load_input_set(spec)
    except DataError as err:
        return f"not readable ({str(err).split(': ', 1)[-1]})"
    return f"{len(data.x)} inputs of shape {tuple(data.x.shape[1:])}, in [{float(data.x.min()):.4g}, " \
           f"{float(data.x.max()):.4g}]"


def _value(v) -> str:
    return "auto" if v is None else (f"{v:g}" if isinstance(v, float) else str(v))
