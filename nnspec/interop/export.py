"""`nnspec export vnnlib`: one VNN-LIB query per (property, input) that VNN-LIB can state.

A query is a box and an unsafe set that is linear in the network's outputs. So a property exports
when its region is a box (an L-inf ball, with a window or not, cut to the domain; or a box region)
and its condition is linear in the raw outputs: robustness on logits (or on probabilities with
margin 0), a threshold on a logit, an output formula over y. Everything else is reported by name
with the reason (KL uncertainty, probability thresholds on a logit network, L2/L1/L0 balls, ranges,
the game kinds, a `normalize` statement, which the ONNX file does not contain).

Strictness is kept: nnspec's named kinds count a tie as safe (s = 0 holds), so their unsafe atoms
are strict (``<``); a formula's atoms keep the relation written.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from nnspec.errors import UsageError


def export(specs: list[str], out: Path, *, model: str | None = None, timeout: float = 60.0) -> tuple[int, list[str]]:
    from nnspec.backends.soundness import linear_objectives
    from nnspec.interop.vnnlib import OutAtom
    from nnspec.interop.writing import to_vnnlib
    from nnspec.pipeline import CheckOptions, collect, load_specs
    from nnspec.runner import Runner, _flat_box, bind_task
    from nnspec.planning.plan import plan
    from nnspec.properties.formulas import NotLinear, OutputFormula

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"-o {out}: not a folder")
    out.mkdir(parents=True, exist_ok=True)
    modules = load_specs(collect(specs), {})
    runner = Runner(CheckOptions(models=[model] if model else []))
    written, skipped, instances = 0, [], []
    for module in modules:
        if not module.properties:
            continue
        m = runner.model_for(module, model)
        model_path = model or (module.model.path if module.model else None)
        tasks = plan([module], n_inputs={module.file: m.n_inputs}).tasks
        stem = _safe(Path(module.file).stem)
        for task in tasks:
            prop = task.prop
            where = f"{module.file}:{prop.span.line} {prop.name}"
            if module.normalization is not None:
                skipped.append(f"{where}: 'normalize' is applied by nnspec, not by the ONNX file")
                continue
            if prop.expression is None or prop.kind == "range":
                skipped.append(f"{where}: {prop.kind} has no unsafe set to state")
                continue
            if not prop.boxes and (prop.region.norm != "linf" or prop.region.feature is not None):
                skipped.append(f"{where}: a {prop.region.norm} ball is not a box (VNN-LIB states boxes)")
                continue
            bound = bind_task(task, m)
            with torch.no_grad():
                outputs = m(bound.x.to(m.dtype)).double()
            for i in range(len(bound.x)):
                one = _flat_box(bound, slice(i, i + 1)) if prop.boxes else None
                lower, upper = _box(prop, bound, i, one, m)
                label = int(bound.labels[i])
                try:
                    if isinstance(prop.expression, OutputFormula):
                        form = prop.expression.linear_form(m.n_outputs, label, module.outputs_are_logits)
                        unsafe = [[OutAtom(a.c, a.d, a.strict) for a in conj] for conj in form]
                    else:
                        C, d, groups = linear_objectives(prop.expression, m.n_outputs, label, outputs[i],
                                                         module.outputs_are_logits)
                        unsafe = [[OutAtom(tuple(C[r].tolist()), float(d[r]), True)
                                   for r in range(len(C)) if int(groups[r]) == g] for g in range(int(groups.max()) + 1)]
                except NotLinear as err:
                    skipped.append(f"{where}: {err}")
                    break
                if not unsafe:
                    skipped.append(f"{where} on {bound.ids[i]}: the property cannot be violated (nothing to state)")
                    continue
                name = f"{stem}_{_safe(prop.name)}" + (f"_r{prop.region.radius:g}" if prop.sweep else "") + f"_{i}.vnnlib"
                comment = (f"nnspec export of {module.file}:{prop.span.line} property {prop.name} on {bound.ids[i]}\n"
                           f"{prop.expression.describe()}")
                (out / name).write_text(to_vnnlib(lower, upper, unsafe, m.n_outputs, comment), encoding="utf-8")
                written += 1
                if model_path is not None:
                    instances.append(f"{_rel(model_path, out)},{name},{timeout:g}")
    (out / "instances.csv").write_text("".join(line + "\n" for line in instances), encoding="utf-8")
    return written, skipped


def _box(prop, bound, i, one, model) -> tuple[np.ndarray, np.ndarray]:
    """The input box of input i as float64 arrays of the values the model reads."""
    if one is not None:
        return one.lower.double().numpy(), one.upper.double().numpy()
    x = bound.x[i].reshape(-1).double()
    r = float(prop.region.radius)
    lo = torch.maximum(x - r, bound.lower.double())
    hi = torch.minimum(x + r, bound.upper.double())
    if prop.region.window is not None:
        keep = prop.region.window.mask(tuple(model.input_shape)).reshape(-1) > 0
        lo, hi = torch.where(keep, lo, x), torch.where(keep, hi, x)
    # rounded inward to the model's dtype: every point the query admits is one the spec admits
    lo32 = lo.to(model.dtype)
    hi32 = hi.to(model.dtype)
    lo32 = torch.where(lo32.double() < lo, torch.nextafter(lo32, torch.full_like(lo32, torch.inf)), lo32)
    hi32 = torch.where(hi32.double() > hi, torch.nextafter(hi32, torch.full_like(hi32, -torch.inf)), hi32)
    return lo32.double().numpy(), hi32.double().numpy()


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _rel(path: str, out: Path) -> str:
    import os

    try:
        return os.path.relpath(Path(path).resolve(), out.resolve())
    except ValueError:
        return str(Path(path).resolve())
