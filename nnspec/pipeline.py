"""The spine: spec text -> parse tree -> AST -> property objects -> plan -> run -> confirm ->
results -> reports. Each stage is a function of the previous stage's immutable output; this file
only chains them, collects files, and makes sure what finished is kept when something breaks.
"""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from typing import TYPE_CHECKING

from nnspec import __version__
from nnspec.errors import DataError, InputError, SpecError, UsageError, suggest
from nnspec.results.run import RunResult, TaskRecord
from nnspec.results.store import ResultStore

if TYPE_CHECKING:  # torch-heavy; imported where used, so that a cached run never loads torch
    from nnspec.planning.plan import Task
    from nnspec.properties.spec import SpecModule

SPEC_SUFFIX = ".nnspec"


@dataclass
class CheckOptions:
    models: list[str] = field(default_factory=list)  # --model overrides (several: a comparison)
    overrides: dict[str, Any] = field(default_factory=dict)  # --set NAME=VALUE
    seed: int | None = None
    budget: int | None = None
    bound_time: float | None = None  # --bound-time: every task's proof time (bound=bab, milp, auto's escalation)
    device: str = "cpu"
    float64: bool = False
    require_proven: bool = False
    cross_check: bool | None = None  # onnxruntime confirms witnesses of ONNX models (None: where it loads)
    json_path: Path | None = None
    strict: bool = False  # warnings (e.g. accuracy far too low) stop the run with exit 2
    executor: str = "inline"  # inline | process | ray (nnspec.execution)
    jobs: int = 1  # workers (inline with jobs > 1 means a local process pool)
    threads: int | None = None  # intra-op threads per worker (None: execution.default_threads)
    address: str | None = None  # a Ray cluster's address (None: a local one)
    engine: str = "auto"  # evaluation backend for ONNX models: auto | ort | torch
    cache: bool = True  # the result cache (nnspec.results.cache), where a folder is set or found
    cache_dir: Path | None = None
    baseline: Path | None = None  # compare every check with this earlier run's results (regressions fail)
    regression_tolerance: float = 0.05  # relative drop of a lower bound or estimate that is a regression


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
    from nnspec.semantics import lower
    from nnspec.syntax.parser import parse_file

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
    from nnspec.semantics import lower
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
# Runner, bind_task and the task helpers live in nnspec.runner (they need torch; a run served from
# the result cache never imports it). Imported here on first use, for code that names them here.

_RUNNER_NAMES = ("Runner", "bind_task")


def __getattr__(name: str):
    if name in _RUNNER_NAMES:
        from nnspec import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'nnspec.pipeline' has no attribute {name!r}")


def check(paths: list[str], options: CheckOptions,
          on_record: Callable[[TaskRecord], None] | None = None,
          on_task: Callable[[Task, int, int], None] | None = None,
          on_plan: Callable[[list[Task]], None] | None = None,
          on_done: Callable[[Task, list[TaskRecord]], None] | None = None) -> RunResult:
    """The whole `nnspec check`: collect -> parse -> lower -> plan -> bind -> run -> confirm -> results.

    Tasks run on the executor the options choose (``nnspec.execution``: in this process, a local
    process pool, or Ray) after the result cache has served those whose inputs did not change;
    every outcome goes through the same results path (JSONL as tasks finish, then the JSON with the
    records in plan order). Input errors found before anything runs raise. Once tasks run, an
    internal error in one task becomes an ``error`` record and the run goes on (exit 3 at the end);
    bad data for one spec or Ctrl-C stops the run but keeps every finished record, and the error is
    re-raised for the CLI to report with its exit code.
    """
    files = collect(paths)
    names: dict[str, str] = {}
    for m in options.models:
        name = Path(m).name
        if name in names and names[name] != m:  # records and reports name a model by its file name
            raise UsageError(f"--model {names[name]} and --model {m} have the same file name {name!r}: results "
                             "name models by file name; copy or link one under another name")
        names[name] = m
    baseline = _baseline(options)
    cache = _open_cache(options)
    run_key = None
    if cache is not None:
        extra = {"overrides": options.overrides, "strict": options.strict}
        if baseline is not None:
            extra["baseline"] = [cache.file_hash(str(options.baseline)), options.regression_tolerance]
        run_key = cache.run_key(files, options.models, {**_run_options(options), **extra})
    if run_key is not None:
        cached = _cached_run(cache, run_key, files, options, on_record, on_plan, on_done)
        if cached is not None:
            return cached
    return _check(files, options, cache, run_key, on_record, on_task, on_plan, on_done, baseline)


def _baseline(options: CheckOptions):
    """The baseline run to compare with (read before anything runs: a bad file is exit 2 at once)."""
    if options.baseline is None:
        return None
    from nnspec.results.baseline import Baseline, check_tolerance

    check_tolerance(options.regression_tolerance)
    try:
        return Baseline.load(options.baseline, options.regression_tolerance)
    except InputError as err:
        raise type(err)(f"--baseline {err}") from None


def _cached_run(cache, run_key: str, files: list[Path], options: CheckOptions, on_record, on_plan, on_done):
    """The whole run from the cache: nothing lowered, no model loaded."""
    data = cache.get_run(run_key)
    if data is None:
        return None
    try:
        cached = RunResult.from_json(data)
    except ValueError:
        return None
    meta = _meta(files, options)
    started = meta.pop("_started")
    for record in cached.records:
        record.cached = True
        if on_record:
            on_record(record)
    kept = ("input_sets", "warnings", "models", "baseline")
    result = RunResult(cached.records, {**{k: v for k, v in cached.meta.items() if k in kept}, **meta})
    result.meta["executor"] = "cache"
    result.meta["cache"] = {"folder": str(cache.folder), "hits": len(result.records), "stored": 0, "whole_run": True}
    result.meta["seconds"] = round(time.perf_counter() - started, 3)
    store = ResultStore(options.json_path)
    for record in result.records:
        store.add(record)
    store.finish(result)
    return result


def _check(files: list[Path], options: CheckOptions, cache, run_key, on_record, on_task, on_plan,
           on_done, baseline=None) -> RunResult:
    from nnspec.execution import WorkItem, default_threads, executor_for, set_threads
    from nnspec.planning.plan import plan
    from nnspec.planning.shard import shard_tasks
    from nnspec.results.baseline import roles_for
    from nnspec.runner import Runner

    if options.executor == "inline" and options.jobs <= 1:  # before models load: onnxruntime sizes by it
        set_threads(options.threads or default_threads(1))

    modules = load_specs(files, options.overrides, options.models)
    if not any(m.properties for m in modules):  # "0 checks, all pass" would be a silent pass
        raise UsageError(f"no property to check in {', '.join(str(f) for f in files[:3])}"
                         + (f" and {len(files) - 3} more" if len(files) > 3 else ""))
    model_paths = options.models or [None]
    # planned once without the models, so that unplannable properties fail before anything loads;
    # re-planned per model below, with defaults that depend on its input dimension
    plan(modules, seed=options.seed, budget=options.budget, bound_time=options.bound_time)
    runner = Runner(options, on_record)
    store = ResultStore(options.json_path)
    result = RunResult([], _meta(files, options))
    pending: BaseException | None = None
    executor = None
    order: dict[int, int] = {}
    seen_summaries: set[tuple] = set()
    merged: dict[tuple, tuple[dict, int]] = {}  # input set -> (summary of the shards in so far, how many)
    emitted: set[tuple] = set()
    roles = roles_for(options.models)
    try:
        planned = [(m, list(_plan_for_model(modules, runner, m, options, cache))) for m in model_paths]
        # tasks over many inputs split into shards: the same cut for every executor
        planned = [(m, shard_tasks(tasks)) for m, tasks in planned]
        items = [WorkItem(k, task, model_path) for k, (model_path, task) in
                 enumerate((m, t) for m, tasks in planned for t in tasks)]
        parts = {}
        for item in items:
            if item.task.input_set >= 0:
                parts[(item.task.module.file, item.task.input_set)] = item.task.shard[1] if item.task.shard else 1
        total = len(items)
        if on_plan:
            on_plan([item.task for item in items])
        done = 0

        def summaries(outcome_summaries) -> None:
            """Each input set's summary once per model; a sharded set's parts merged, and its
            warnings (--strict: the error) only once every part is in."""
            from nnspec.models.sanity import merge

            for key, summary, warnings in outcome_summaries:
                key = tuple(key)
                if key in seen_summaries:
                    continue
                seen_summaries.add(key)
                whole = key[:3]
                if whole in merged:
                    summary, got = merge(merged[whole][0], summary), merged[whole][1] + 1
                else:
                    got = 1
                merged[whole] = (summary, got)
                if got < parts.get(whole[:2], 1):
                    continue
                emitted.add(whole)
                warnings = summary.get("warnings", warnings)
                result.meta.setdefault("input_sets", []).append(summary)
                result.meta.setdefault("warnings", []).extend(warnings)
                if warnings and options.strict:
                    raise DataError(f"{warnings[0]} (--strict makes warnings errors)")

        def take(item: WorkItem, records: list[TaskRecord]) -> None:
            nonlocal done
            for record in records:
                if baseline is not None:
                    baseline.apply(record, roles)
                if record.witness is not None and "x" in record.witness:
                    store.save_witness(record, record.witness["x"])
                store.add(record)
                result.records.append(record)
                order[id(record)] = item.index
                runner.on_record(record)
            done += 1
            if on_done:
                on_done(item.task, records)

        todo, keys = [], {}
        for item in items:
            key = cache.key(item.task, _model_path(item.task.module, item.model_path), _run_options(options)) \
                if cache is not None else None
            hit = cache.get(key, item.task) if key is not None else None
            if hit is None:
                keys[item.index] = key
                todo.append(item)
                continue
            if on_task:
                on_task(item.task, done, total)
            summaries(hit[1])
            take(item, hit[0])
        if todo:
            executor = executor_for(options, len(todo), runner)
            started = (lambda item: on_task(item.task, done, total)) if on_task else None
            for outcome in executor.run(todo, on_start=started):
                item = items[outcome.index]
                summaries(outcome.summaries)
                if outcome.input_error is not None:
                    take(item, outcome.records)
                    raise outcome.input_error
                if cache is not None and keys.get(item.index) is not None:
                    cache.put(keys[item.index], outcome.records, outcome.summaries)
                take(item, outcome.records)
    except KeyboardInterrupt as err:
        result.interrupted = True
        pending = err
    except BaseException as err:  # keep what finished, then let the CLI report the error
        result.errors.append(err.one_line() if hasattr(err, "one_line") else f"{type(err).__name__}: {err}")
        pending = err
    finally:
        if executor is not None:
            executor.close(abort=pending is not None)
        # plan order, whichever executor ran the tasks (the JSONL keeps completion order)
        position = {id(r): (order.get(id(r), 0), k) for k, r in enumerate(result.records)}
        result.records.sort(key=lambda r: position[id(r)])
        result.meta["models"] = [m.describe() for m in runner._models.values()]
        result.meta["executor"] = options.executor if options.jobs <= 1 or options.executor != "inline" else "process"
        if getattr(executor, "workers", None):
            result.meta["workers"] = executor.workers
        for whole, (summary, got) in merged.items():
            if whole not in emitted:  # a sharded input set whose parts did not all finish
                result.meta.setdefault("input_sets", []).append(summary | {"partial": True})
        if baseline is not None:
            result.meta["baseline"] = baseline.summary()
        if cache is not None:
            result.meta["cache"] = {"folder": str(cache.folder), "hits": cache.hits, "stored": cache.stored}
        result.meta["seconds"] = round(time.perf_counter() - result.meta.pop("_started"), 3)
        store.finish(result)
    if pending is None and run_key is not None and not result.errors and \
            not any(r.verdict == "error" for r in result.records):
        cache.put_run(run_key, result.to_json())
    if pending is not None:
        pending.partial_result = result  # the CLI still writes the reports from what finished
        raise pending
    return result


def _open_cache(options: CheckOptions):
    from nnspec.results.cache import ResultCache, default_dir

    if options.cache is False:
        return None
    folder = options.cache_dir if options.cache_dir is not None else default_dir()
    return ResultCache(folder) if folder is not None else None


def _model_path(module: SpecModule, override: str | None) -> str:
    if override is not None:
        return override
    if module.model is None:
        raise UsageError(f"{module.file}: no model: add 'model \"net.onnx\"' or pass --model")
    return module.model.path


def _run_options(options: CheckOptions) -> dict[str, Any]:
    """The run options that change records (the cache key holds them)."""
    return {"device": options.device, "float64": options.float64, "require_proven": options.require_proven,
            "cross_check": options.cross_check, "engine": options.engine, "seed": options.seed,
            "budget": options.budget, "bound_time": options.bound_time}


def _plan_for_model(modules, runner, model_path, options: CheckOptions, cache=None):
    """Re-plan with dimension-aware defaults once each module's model is known (from the cache's
    model facts when it has them: a run served from the cache loads no model)."""
    from nnspec.planning.plan import plan

    dims = {}
    for m in modules:
        if m.properties:
            path = _model_path(m, model_path)
            info = cache.model_info(path) if cache is not None else None
            if info is None:
                model = runner.model_for(m, model_path)
                info = {"n_inputs": model.n_inputs, "input_shape": list(model.input_shape),
                        "outputs": model.n_outputs}
                if cache is not None:
                    cache.put_model_info(path, info)
            dims[m.file] = int(info["n_inputs"])
    return plan(modules, seed=options.seed, budget=options.budget, bound_time=options.bound_time,
                n_inputs=dims).tasks


def _meta(files: list[Path], options: CheckOptions) -> dict[str, Any]:
    from nnspec.files import sha256_of

    return {
        "nnspec_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "seed": options.seed, "budget": options.budget, "bound_time": options.bound_time,
        "device": options.device,
        "model_args": [str(m) for m in options.models],
        "specs": [{"file": str(f), "sha256": sha256_of(f)} for f in files],
        "_started": time.perf_counter(),
    }
