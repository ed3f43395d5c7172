"""Running one plan task on a loaded model: bind its inputs, run its backend, confirm every
witness, and turn outcomes into records. ``Runner`` holds the models of a run (one load per model
per process); the executors (``nnspec.execution``) call it, the pipeline never does directly."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable

import torch

from nnspec.backends import registry
from nnspec.backends.base import BoundTask
from nnspec.errors import InputError, SpecError, UsageError
from nnspec.models.bind import (
    BoundInputs, bind_box_centres, bind_inputs, check_property, reference_inputs, with_box,
)
from nnspec.models.loading import load_model
from nnspec.models.model import Budget, Model
from nnspec.models.sanity import misclassified
from nnspec.planning.plan import Task
from nnspec.properties.spec import SpecModule
from nnspec.results.confirm import confirm
from nnspec.results.records import Outcome
from nnspec.results.run import TaskRecord
from nnspec.results.verdicts import failures

if TYPE_CHECKING:
    from nnspec.pipeline import CheckOptions


class Runner:
    """Runs a plan task by task, confirming witnesses and streaming records as they finish."""

    def __init__(self, options: CheckOptions, on_record: Callable[[TaskRecord], None] | None = None):
        self.options = options
        self.on_record = on_record or (lambda r: None)
        self._models: dict[str, Model] = {}
        self._cross: dict[str, Any] = {}

    def model_for(self, module: SpecModule, override: str | None) -> Model:
        if override is not None:
            path, where = override, "--model"
        elif module.model is not None:
            path, where = module.model.path, str(module.model.span)
        else:
            raise UsageError(f"{module.file}: no model: add 'model \"net.onnx\"' or pass --model")
        if path not in self._models:
            try:
                model = load_model(path, device=self.options.device,
                                   dtype=torch.float64 if self.options.float64 else torch.float32,
                                   engine=getattr(self.options, "engine", "torch"))
            except InputError as err:
                raise type(err)(f"{where}: {err}") from None
            if module.normalization is not None:
                _check_normalization(module, model)
                model.set_normalization(module.normalization.mean, module.normalization.std)
            self._models[path] = model
        return self._models[path]

    def run_task(self, task: Task, model: Model, bound: BoundInputs) -> list[tuple[TaskRecord, Outcome]]:
        """All inputs of the task in one batch; a box region that differs per input runs input by
        input (each with its own box as the domain and the L-inf radius that covers it)."""
        prop = task.prop
        check_property(prop, model)
        if not prop.boxes:
            return self._run_batch(task, prop, model, bound)
        if bound.lower.shape[0] == 1:
            return self._run_batch(task, _covering(prop, bound), model, _flat_box(bound, slice(None)))
        records = []
        for i in range(len(bound.x)):
            one = _flat_box(bound, slice(i, i + 1))
            records.extend(self._run_batch(task, _covering(prop, one), model, one))
        return records

    def _run_batch(self, task: Task, prop, model: Model, bound: BoundInputs) -> list[tuple[TaskRecord, Outcome]]:
        options = task.option_dict()
        reference = reference_inputs(prop, task.module, bound, model)
        bt = BoundTask(_within_domain(prop, bound), bound.x, bound.labels, bound.lower, bound.upper,
                       task.module.outputs_are_logits, options, reference)
        backend = registry.create(task.backend)
        model.budget = Budget(max_queries=(options.get("budget") or 0) * len(bound.x) + 4 * len(bound.x) + 8)
        try:
            outcomes = backend.run(bt, model)
        finally:
            model.budget = None
        records = []
        cross = self._cross_check(model)
        for i, outcome in enumerate(outcomes):
            outcome = confirm(outcome, model=model, ball=prop.region, expression=prop.expression,
                              centre=bound.x[i], label=int(bound.labels[i]), lower=bound.lower,
                              upper=bound.upper, outputs_are_logits=task.module.outputs_are_logits,
                              reference=None if reference is None else reference[i], cross_check=cross,
                              tolerance=0.0 if prop.boxes else None) \
                if prop.expression is not None else outcome
            if prop.boxes:
                outcome = dataclasses.replace(outcome, notes=outcome.notes + (
                    f"region: {prop.boxes[0].describe()}, run as linf({prop.region.radius:.6g}) around the "
                    f"centre cut to the box; witnesses confirmed inside the box at tolerance 0",))
            if prop.kind in ("robustness", "max_radius", "feature_robustness") and \
                    misclassified(bound, i, outcome.centre_output):
                outcome = dataclasses.replace(outcome, notes=outcome.notes + (
                    "the model misclassifies this input: its robustness is violated at radius 0",))
            records.append(self._record(task, model, bound, i, outcome, options))
        return records

    def _cross_check(self, model: Model):
        """onnxruntime on the original ONNX file, for witness confirmation: on by default for ONNX
        models (the reference semantics; ``cross_check=False`` turns it off, ``True`` makes a
        missing onnxruntime an error)."""
        if self.options.cross_check is False or not model.name.endswith(".onnx"):
            return None
        from nnspec.errors import ModelError
        from nnspec.models.crosscheck import onnxruntime_session

        path = next((p for p, m in self._models.items() if m is model), model.source)
        if path is None:  # a model given in memory: there is no file for onnxruntime to run
            return None
        if path not in self._cross:
            try:
                self._cross[path] = onnxruntime_session(path, model)
            except Exception as err:
                if self.options.cross_check:
                    raise ModelError(f"{path}: onnxruntime cannot run this model for --cross-check ({err})") from None
                self._cross[path] = None  # default: confirmation on the converted model alone
        return self._cross[path]

    def _record(self, task: Task, model: Model, bound: BoundInputs, i: int, outcome: Outcome,
                options: dict[str, Any]) -> tuple[TaskRecord, Outcome]:
        prop = task.prop
        w = prop.region.window
        fails = failures(prop, outcome, self.options.require_proven)
        return TaskRecord(
            spec=task.module.file, property=prop.name, line=prop.span.line, column=prop.span.column,
            kind=prop.kind, norm=prop.region.norm, radius=prop.region.radius,
            window=None if w is None else [w.row, w.col, w.height, w.width],
            expression=prop.expression.describe() if prop.expression is not None else prop.kind,
            requirements=[r.describe() for r in prop.requirements], model=model.name,
            input_id=bound.ids[i], label=int(bound.labels[i]), label_source=bound.label_source,
            backend=task.backend, options=options, verdict=outcome.verdict.value, passed=not fails,
            failures=fails, s_centre=outcome.s_centre, bounds=outcome.bounds.to_json(),
            witness=outcome.witness.to_json() if outcome.witness else None, lipschitz=outcome.lipschitz,
            min_s=outcome.min_s, value_range=list(outcome.value_range) if outcome.value_range else None,
            value_bounds=list(outcome.value_bounds) if outcome.value_bounds else None,
            queries=outcome.queries, seconds=outcome.seconds, stop=outcome.stop,
            centre_output=outcome.centre_output, notes=list(outcome.notes),
            dropped_witnesses=outcome.dropped_witnesses, trace=_thin(outcome.trace),
            milestones=[m.to_json(include_x=True) for m in outcome.milestones],
        ), outcome


def bind_task(task: Task, model: Model) -> BoundInputs:
    """The task's inputs on the model: its input set (with its box, for a box region), or the
    box's midpoint when the spec has no inputs statement."""
    if task.input_set < 0:
        return bind_box_centres(task.prop, task.module, model)
    bound = bind_inputs(task.module, task.input_set, model)
    return with_box(task.prop, task.module, model, bound) if task.prop.boxes else bound


def _flat_box(bound: BoundInputs, rows: slice) -> BoundInputs:
    """The inputs ``rows`` with their (shared) box as a flat (n,) domain."""
    lower = bound.lower[0] if bound.lower.shape[0] == 1 else bound.lower[rows][0]
    upper = bound.upper[0] if bound.upper.shape[0] == 1 else bound.upper[rows][0]
    return BoundInputs(bound.x[rows], bound.labels[rows], bound.label_source, bound.ids[rows], lower, upper)


def _covering(prop, bound: BoundInputs):
    """The box property as an L-inf ball whose radius covers the box from every centre: cut to
    the box (the domain of the batch), it is exactly the box."""
    flat = bound.x.reshape(len(bound.x), -1).double()
    reach = torch.maximum(flat - bound.lower.double(), bound.upper.double() - flat).amax()
    radius = max(float(reach), 1e-12)
    return dataclasses.replace(prop, region=dataclasses.replace(prop.region, radius=radius))


def _within_domain(prop, bound: BoundInputs):
    """The property with its ball cut to the domain's diameter in the ball's norm: a larger ball
    holds the same points of the domain (so the same violations and proofs), and solvers never see
    a radius that overflows the model's dtype (``linf(1e308)`` on a float32 network)."""
    width = (bound.upper - bound.lower).double()
    diameter = {"linf": float(width.max()), "l2": float(width.norm()), "l1": float(width.sum()),
                "l0": float(width.numel())}[prop.region.norm]
    if prop.region.radius <= diameter:
        return prop
    return dataclasses.replace(prop, region=dataclasses.replace(prop.region, radius=diameter))


def _check_normalization(module: SpecModule, model: Model) -> None:
    """One value for every input, or one per channel (the first dimension after the batch)."""
    norm = module.normalization
    k = len(norm.mean)
    channels = model.input_shape[0]
    if k != 1 and k != channels:
        raise SpecError.at(norm.span, f"normalize gives {k} values but {model.name} has {channels} "
                                      f"{'channels' if len(model.input_shape) > 1 else 'inputs'} "
                                      f"(input shape {tuple(model.input_shape)}); give 1 or {channels}")


def _thin(trace: list[dict], keep: int = 200) -> list[dict]:
    if len(trace) <= keep:
        return trace
    step = len(trace) / keep
    return [trace[int(i * step)] for i in range(keep)] + [trace[-1]]


