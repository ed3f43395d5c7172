"""A sanity summary of every input set on its model: clean accuracy, value range against the
domain, label distribution, and warnings for the usual mistakes (a double scale, a wrong layout or
normalisation, labels that do not match the model) before any property is believed.

A robustness check on an input that the model already misclassifies is a violation at radius 0;
the summary counts them and the records say so.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the summary type is read by reports, which never import torch
    from nnspec.models.bind import BoundInputs
    from nnspec.models.model import Model
    from nnspec.properties.spec import SpecModule

LOW_ACCURACY = 0.5  # below this, with labels from the data, the inputs are probably read wrongly
TINY_RANGE = 0.05  # inputs spanning less than this fraction of the domain's width


@dataclass
class InputSummary:
    spec: str
    line: int
    source: str
    model: str
    count: int
    labels_from: str  # data | predicted
    correct: int | None  # None without labels from the data
    value_min: float
    value_max: float
    domain_min: float
    domain_max: float
    labels: dict[str, int]
    warnings: list[str] = field(default_factory=list)
    outputs: int = 0  # the model's outputs (for the chance-level test when summaries are merged)
    domain_width: float = 0.0  # the narrowest dimension of the domain
    where: str = ""  # the input statement's position, for the warnings

    @property
    def accuracy(self) -> float | None:
        return None if self.correct is None else self.correct / max(self.count, 1)

    def to_json(self) -> dict:
        return asdict(self) | {"accuracy": self.accuracy}

    def line_text(self) -> str:
        acc = "labels predicted by the model" if self.correct is None else \
            f"accuracy {self.correct}/{self.count} ({100 * self.accuracy:.1f}%)"
        labels = " ".join(f"{k}:{v}" for k, v in sorted(self.labels.items(), key=lambda kv: int(kv[0])))
        return (f"{self.source} ({self.spec}:{self.line}) on {self.model}: {self.count} inputs, {acc}; values "
                f"[{self.value_min:.4g}, {self.value_max:.4g}] in the domain [{self.domain_min:.4g}, "
                f"{self.domain_max:.4g}]; labels {labels}")


def summarise(module: SpecModule, index: int, model: Model, bound: BoundInputs) -> InputSummary:
    import torch

    spec = module.input_sets[index]
    where = f"{spec.span}"
    with torch.no_grad():
        predicted = model.predict(bound.x) if len(bound.x) else torch.zeros(0, dtype=torch.long)
    from_data = bound.label_source == "data"
    correct = int((predicted == bound.labels).sum()) if from_data else None
    flat = bound.x.reshape(len(bound.x), -1).to(torch.float64)
    summary = InputSummary(
        spec=module.file, line=spec.span.line, source=spec.path.split("/")[-1], model=model.name, count=len(bound.x),
        labels_from=bound.label_source, correct=correct, value_min=float(flat.min()), value_max=float(flat.max()),
        domain_min=float(bound.lower.min()), domain_max=float(bound.upper.max()),
        labels={str(k): v for k, v in sorted(Counter(bound.labels.tolist()).items())}, outputs=model.n_outputs,
        domain_width=float((bound.upper - bound.lower).to(torch.float64).min()), where=where)
    summary.warnings = warnings_for(summary)
    return summary


def warnings_for(summary: InputSummary) -> list[str]:
    """The usual input mistakes, from the summary's figures alone (so that the summaries of an
    input set's shards, merged, warn exactly as the whole set would)."""
    out = []
    m, where = summary.outputs, summary.where
    if summary.correct is not None and summary.count >= 4 and m:
        acc = summary.accuracy
        if acc <= 1.5 / m or acc < LOW_ACCURACY:
            chance = " (chance level)" if acc <= 1.5 / m else ""
            out.append(f"{where}: warning: the model classifies {summary.correct} of {summary.count} inputs correctly "
                       f"({100 * acc:.0f}%{chance}): are the inputs scaled, normalised and laid out as the model "
                       "expects?")
    width = summary.domain_width
    spread = summary.value_max - summary.value_min
    if summary.count >= 1 and width > 0 and spread < TINY_RANGE * width:
        out.append(f"{where}: warning: the inputs span [{summary.value_min:.3g}, {summary.value_max:.3g}], "
                   f"{100 * spread / width:.2g}% of the domain's width: a double 'scale' or a missing one?")
    return out


def merge(a: dict, b: dict) -> dict:
    """Two shards' summaries (``to_json`` form) of one input set on one model, as one."""
    fields = InputSummary.__dataclass_fields__
    out = {k: a[k] for k in fields if k in a}
    out["count"] = a["count"] + b["count"]
    out["correct"] = None if a.get("correct") is None or b.get("correct") is None else a["correct"] + b["correct"]
    for key, pick in (("value_min", min), ("value_max", max), ("domain_min", min), ("domain_max", max),
                      ("domain_width", min)):
        if key in a and key in b:
            out[key] = pick(a[key], b[key])
    labels = dict(a.get("labels", {}))
    for k, v in b.get("labels", {}).items():
        labels[k] = labels.get(k, 0) + v
    out["labels"] = {k: labels[k] for k in sorted(labels, key=int)}
    merged = InputSummary(**out)
    merged.warnings = warnings_for(merged) if merged.outputs else list(dict.fromkeys(a["warnings"] + b["warnings"]))
    return merged.to_json()


def misclassified(bound: BoundInputs, i: int, centre_output: list[float]) -> bool:
    """Whether the model misclassifies centre i (labels from the data only)."""
    if bound.label_source != "data" or not centre_output:
        return False
    top = max(range(len(centre_output)), key=centre_output.__getitem__)  # the first maximum, as argmax
    return top != int(bound.labels[i])
