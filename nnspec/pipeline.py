"""The spine: spec text -> parse tree -> AST -> property objects -> plan -> run -> confirm ->
results -> reports. Each stage is a function of the previous stage's immutable output; this file
only chains them, collects files, and makes sure what finished is kept when something breaks.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from nnspec import __version__
from nnspec.backends import registry
from nnspec.backends.base import BoundTask
from nnspec.errors import DataError, InputError, SpecError, UsageError, suggest
from nnspec.models.bind import (
    BoundInputs, bind_box_centres, bind_inputs, check_property, reference_inputs, with_box,
)
from nnspec.models.loading import load_model, sha256_of
from nnspec.models.model import Budget, Model
from nnspec.models.sanity import misclassified, summarise
from nnspec.planning.plan import Task, plan
from nnspec.properties.spec import SpecModule
from nnspec.results.confirm import confirm
from nnspec.results.records import Outcome
from nnspec.results.run import RunResult, TaskRecord
from nnspec.results.store import ResultStore
from nnspec.results.verdicts import failures
from nnspec.semantics import lower
from nnspec.syntax.parser import parse_file

SPEC_SUFFIX = ".nnspec"


@dataclass
class CheckOptions:
    models: list[str] = field(default_factory=list)  # --model overrides (several: a comparison)
    overrides: dict[str, Any] = field(default_factory=dict)  # --set NAME=VALUE
    seed: int | None = None
    budget: int | None = None
    device: str = "cpu"
    float64: bool = False
    require_proven: bool = False
    cross_check: bool = False
    json_path: Path | None = None
    strict: bool = False  # warnings (e.g. accuracy far too low) stop the run with exit 2


# ---------------------------------------------------------------------- front end


def collect(paths: list[str]) -> list[Path]:
    """Spec files from files and folders (recursively), in a stable order."""
    if not paths:
        raise UsageError("no spec given: nnspec check PATH...")
    found: list[Path] = []
    for p in map(Path, paths):
        try:
            p.exists()
        except OSError as err:
            raise UsageError(f"{p}: cannot open ({err.strerror})") from None
        if p.is_dir():
            found.extend(sorted(p.rglob(f"*{SPEC_SUFFIX}")))
        elif p.is_file():  # a spec, a VNN-LIB query, or a VNN-COMP instances.csv
            found.append(p)
        else:
            raise UsageError(f"{p}: no such file or folder")
    if not found:
        raise UsageError(f"no {SPEC_SUFFIX} files found in {', '.join(paths)}")
    return found


def load_specs(files: list[Path], overrides: dict[str, Any], models: list[str] | None = None) -> list[SpecModule]:
    """Parse and lower every file; raises one SpecError holding the errors of all files."""
    modules, found = [], []
    for f in files:
        try:
            if f.suffix == ".vnnlib" or f.name == "instances.csv":
                modules.extend(_vnnlib_modules(f, overrides, models[0] if models else None))
            else:
                modules.append(lower(parse_file(f), overrides))
        except SpecError as err:
            found.extend(err.diagnostics)
    if found:
        raise SpecError(found)
    params = {name for m in modules for name, _ in m.parameters}
    for name in overrides:
        if name not in params:
            hint = suggest(name, params)
            raise UsageError(f"--set {name}: no spec declares 'param {name}'" + (f" ({hint})" if hint else ""))
    return modules


def _vnnlib_modules(path: Path, overrides: dict[str, Any], model_override: str | None = None) -> list[SpecModule]:
    """A VNN-LIB query (its model from --model, or from an instances.csv beside it), or every
    instance of an instances.csv, as spec modules (``nnspec import vnnlib`` shows their text)."""
    from nnspec.interop.vnnlib import check_against_model, model_for_query, read_instances, spec_source
    from nnspec.syntax.parser import parse_text

    pairs = [(v, m) for m, v, _ in read_instances(path)] if path.name == "instances.csv" else \
        [(path, model_for_query(path))]
    modules = []
    for query_path, model in pairs:
        query, text = spec_source(query_path, model)
        if model_override is not None and Path(model_override).is_file():
            check_against_model(query, model_override)  # one line naming the query, before anything loads
        modules.append(lower(parse_text(text, f"{query_path} (imported)"), overrides))
    return modules


# ---------------------------------------------------------------------- the run


class Runner:
    """Runs a plan task by task, confirming witnesses and streaming records as they finish."""

    def __init__(self, options: CheckOptions, on_record: Callable[[TaskRecord], None] | None = None):
        self.options = options
        self.on_record = on_record or (lambda r: None)
        self._models: dict[str, Model] = {}
        self._cross: dict[str, Any] = {}
        self._summaries: dict[tuple, Any] = {}

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
                                   dtype=torch.float64 if self.options.float64 else torch.float32)
            except InputError as err:
                raise type(err)(f"{where}: {err}") from None
            if module.normalization is not None:
                _check_normalization(module, model)
                model.set_normalization(module.normalization.mean, module.normalization.std)
            self._models[path] = model
        return self._models[path]

    def sanity(self, task: Task, model: Model, bound: BoundInputs, result: RunResult) -> None:
        """The input set's summary on this model, once: clean accuracy, value range, labels, and
        warnings (which ``--strict`` turns into an error)."""
        key = (task.module.file, task.input_set, model.name)
        if key in self._summaries:
            return
        summary = summarise(task.module, task.input_set, model, bound)
        self._summaries[key] = summary
        result.meta.setdefault("input_sets", []).append(summary.to_json())
        result.meta.setdefault("warnings", []).extend(summary.warnings)
        if summary.warnings and self.options.strict:
            raise DataError(f"{summary.warnings[0]} (--strict makes warnings errors)")

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
        if not self.options.cross_check or not model.name.endswith(".onnx"):
            return None
        from nnspec.models.crosscheck import onnxruntime_session

        path = next(p for p, m in self._models.items() if m is model)
        if path not in self._cross:
            self._cross[path] = onnxruntime_session(path, model)
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


def check(paths: list[str], options: CheckOptions,
          on_record: Callable[[TaskRecord], None] | None = None,
          on_task: Callable[[Task, int, int], None] | None = None,
          on_plan: Callable[[list[Task]], None] | None = None,
          on_done: Callable[[Task, list[TaskRecord]], None] | None = None) -> RunResult:
    """The whole `nnspec check`: collect -> parse -> lower -> plan -> bind -> run -> confirm -> results.

    Input errors found before anything runs raise. Once tasks run, a later failure (bad data for
    one spec, Ctrl-C) stops the run but keeps every finished record: the result and the JSON are
    still written, and the error is re-raised for the CLI to report with its exit code.
    """
    files = collect(paths)
    modules = load_specs(files, options.overrides, options.models)
    if not any(m.properties for m in modules):  # "0 checks, all pass" would be a silent pass
        raise UsageError(f"no property to check in {', '.join(str(f) for f in files[:3])}"
                         + (f" and {len(files) - 3} more" if len(files) > 3 else ""))
    model_paths = options.models or [None]
    # planned once without the models, so that unplannable properties fail before anything loads;
    # re-planned per model below, with defaults that depend on its input dimension
    first_plan = plan(modules, seed=options.seed, budget=options.budget)
    runner = Runner(options, on_record)
    store = ResultStore(options.json_path)
    result = RunResult([], _meta(files, options))
    pending: BaseException | None = None
    total = len(first_plan.tasks) * len(model_paths)
    done = 0
    try:
        planned = [(m, list(_plan_for_model(modules, runner, m, options))) for m in model_paths]
        if on_plan:
            on_plan([t for _, tasks in planned for t in tasks])
        for model_path, tasks in planned:
            for task in tasks:
                model = runner.model_for(task.module, model_path)
                bound = bind_task(task, model)
                if task.input_set >= 0:
                    runner.sanity(task, model, bound, result)
                if on_task:
                    on_task(task, done, total)
                pairs = runner.run_task(task, model, bound)
                for i, (record, outcome) in enumerate(pairs):
                    if outcome.witness is not None:
                        store.save_witness(record, outcome.witness.x)
                        record.witness["x"] = outcome.witness.x
                        record.witness["centre"] = bound.x[i].tolist()
                    store.add(record)
                    result.records.append(record)
                    runner.on_record(record)
                done += 1
                if on_done:
                    on_done(task, [r for r, _ in pairs])
    except KeyboardInterrupt as err:
        result.interrupted = True
        pending = err
    except BaseException as err:  # keep what finished, then let the CLI report the error
        result.errors.append(err.one_line() if hasattr(err, "one_line") else f"{type(err).__name__}: {err}")
        pending = err
    finally:
        result.meta["models"] = [m.describe() for m in runner._models.values()]
        result.meta["seconds"] = round(time.perf_counter() - result.meta.pop("_started"), 3)
        store.finish(result)
    if pending is not None:
        pending.partial_result = result  # the CLI still writes the reports from what finished
        raise pending
    return result


def _plan_for_model(modules, runner: Runner, model_path, options: CheckOptions):
    """Re-plan with dimension-aware defaults once each module's model is known."""
    dims = {}
    for m in modules:
        if m.properties:
            dims[m.file] = runner.model_for(m, model_path).n_inputs
    return plan(modules, seed=options.seed, budget=options.budget, n_inputs=dims).tasks


def _meta(files: list[Path], options: CheckOptions) -> dict[str, Any]:
    return {
        "nnspec_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "seed": options.seed, "budget": options.budget, "device": options.device,
        "specs": [{"file": str(f), "sha256": sha256_of(f)} for f in files],
        "_started": time.perf_counter(),
    }
