"""The executor seam: where plan tasks run. In this process, in a local process pool (``--jobs N``),
or on a Ray cluster (``--executor ray``): every executor runs the same ``Worker.run`` on
``WorkItem``s and hands back ``TaskOutcome``s (records with their witnesses, the input-set
summaries) in completion order; the pipeline writes them through one results path.

An internal error in a task (a bug, an operator a backend cannot handle) is recorded on that task
as an ``error`` record and the run goes on; input errors (bad data for a spec) and Ctrl-C still
stop the run, keeping what finished.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from nnspec.errors import InputError, UsageError

EXECUTORS = ("inline", "process", "ray")


@dataclass(frozen=True)
class WorkItem:
    index: int  # the task's place in the plan (records are ordered by it in the final results)
    task: Any  # planning.plan.Task
    model_path: str | None  # --model override, else the spec's model


@dataclass
class TaskOutcome:
    index: int
    records: list  # TaskRecord, witness x and centre inside record.witness
    # (key, summary, warnings); key (spec file, input set, model, shard): the pipeline merges shards
    summaries: list[tuple[tuple, dict, list[str]]] = field(default_factory=list)
    error: str | None = None  # an internal error, one line (its records have verdict "error")
    input_error: BaseException | None = None  # stops the run (exit 2) after what finished is kept
    cached: bool = False


# ---------------------------------------------------------------------- threads


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_threads(jobs: int) -> int:
    """Intra-op threads per worker: the cores divided among the workers, and one when the machine
    is already busy (load average at or above the core count: on 2 shared cores, 2 torch threads
    ran 3-50x slower than one, with identical results)."""
    cores = available_cores()
    try:
        busy = os.getloadavg()[0] >= cores
    except (AttributeError, OSError):
        busy = False
    return 1 if busy else max(1, cores // max(1, jobs))


def set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, int(threads)))


# ---------------------------------------------------------------------- the worker


class Worker:
    """Runs work items with one Runner (one load per model per worker)."""

    def __init__(self, options, runner=None):
        from nnspec.runner import Runner

        self.options = options
        self.runner = runner or Runner(options)
        self._seen: set[tuple] = set()

    def run(self, item: WorkItem) -> TaskOutcome:
        from nnspec.runner import bind_task
        from nnspec.models.sanity import summarise

        task = item.task
        out = TaskOutcome(item.index, [])
        bound, model = None, None
        try:
            model = self.runner.model_for(task.module, item.model_path)
            bound = bind_task(task, model)
            if task.input_set >= 0:
                key = (task.module.file, task.input_set, model.name, task.shard)
                if key not in self._seen:
                    self._seen.add(key)
                    s = summarise(task.module, task.input_set, model, bound)
                    out.summaries.append((key, s.to_json(), list(s.warnings)))
            for i, (record, outcome) in enumerate(self.runner.run_task(task, model, bound)):
                if outcome.witness is not None:
                    record.witness["x"] = outcome.witness.x
                    record.witness["centre"] = bound.x[i].tolist()
                out.records.append(record)
        except KeyboardInterrupt:
            raise
        except InputError as err:
            out.input_error = err
        except Exception as err:  # an internal error: recorded on this task, the run goes on
            message = _one_line(err)
            out.error = message
            out.records = error_records(task, model, bound, message, self.options.require_proven)
        return out


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else "no message"
    return f"internal error: {type(err).__name__}: {text}"


def error_records(task, model, bound, message: str, require_proven: bool = False) -> list:
    """One ``error`` record per input of the task (one for the whole task when its inputs were not
    bound yet)."""
    from nnspec.results.run import TaskRecord

    prop = task.prop
    w = prop.region.window
    if bound is not None:
        rows = [(bound.ids[i], int(bound.labels[i]), bound.label_source) for i in range(len(bound.x))]
    else:
        rows = [("*", -1, "none")]
    name = model.name if model is not None else Path(str(task.module.model.path if task.module.model else "?")).name
    return [TaskRecord(
        spec=task.module.file, property=prop.name, line=prop.span.line, column=prop.span.column,
        kind=prop.kind, norm=prop.region.norm, radius=prop.region.radius,
        window=None if w is None else [w.row, w.col, w.height, w.width],
        expression=prop.expression.describe() if prop.expression is not None else prop.kind,
        requirements=[r.describe() for r in prop.requirements], model=name, input_id=input_id, label=label,
        label_source=source, backend=task.backend, options=task.option_dict(), verdict="error", passed=False,
        failures=[message], s_centre=None, bounds={}, witness=None, lipschitz=None, min_s=None, value_range=None,
        queries=0, seconds=0.0, stop="error", centre_output=[], notes=[message]) for input_id, label, source in rows]


# ---------------------------------------------------------------------- executors


class InlineExecutor:
    """Tasks one after another in this process."""

    name = "inline"

    def __init__(self, options, runner=None):
        self.worker = Worker(options, runner)

    def run(self, items: list[WorkItem], on_start=None) -> Iterator[TaskOutcome]:
        for item in items:
            if on_start:
                on_start(item)
            yield self.worker.run(item)

    def close(self, abort: bool = False) -> None:
        pass


_WORKER: Worker | None = None


def _pool_init(options, threads: int) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops the pool
    set_threads(threads)
    global _WORKER
    _WORKER = Worker(options)


def _pool_run(item: WorkItem) -> TaskOutcome:
    return _WORKER.run(item)


class ProcessExecutor:
    """A local pool of ``jobs`` processes (spawned: no state shared with this one), each with its
    own models; outcomes in completion order. A worker that dies (a crash in native code) becomes
    an error record on its task, not a hung run."""

    name = "process"

    def __init__(self, options, jobs: int, threads: int):
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        self.options = options
        self.workers = {"processes": jobs, "threads": threads}
        self.pool = ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"),
                                        initializer=_pool_init, initargs=(options, threads))

    def run(self, items: list[WorkItem], on_start=None) -> Iterator[TaskOutcome]:
        from concurrent.futures import as_completed

        futures = {self.pool.submit(_pool_run, item): item for item in items}
        for future in as_completed(futures):
            item = futures[future]
            if on_start:
                on_start(item)
            try:
                yield future.result()
            except Exception as err:  # the worker process died, or the outcome could not travel back
                message = _one_line(err)
                yield TaskOutcome(item.index, error_records(item.task, None, None, message,
                                                            self.options.require_proven), error=message)

    def close(self, abort: bool = False) -> None:
        if not abort:
            self.pool.shutdown(wait=True)
            return
        processes = list((getattr(self.pool, "_processes", None) or {}).values())
        self.pool.shutdown(wait=False, cancel_futures=True)
        for proc in processes:  # Ctrl-C or an input error: stop the workers at once
            if proc.is_alive():
                proc.terminate()


def executor_for(options, n_items: int, runner=None):
    """The executor that the options ask for (``executor``, ``jobs``, ``threads``); the inline one
    reuses ``runner`` (its models are loaded already)."""
    kind = options.executor
    jobs = max(1, int(options.jobs or 1))
    if kind not in EXECUTORS:
        raise UsageError(f"--executor {kind!r}: use {', '.join(EXECUTORS)}")
    if kind == "ray":
        from nnspec.distributed import RayExecutor

        return RayExecutor(options, jobs=options.jobs, threads=options.threads, address=options.address)
    if kind == "process" or (kind == "inline" and jobs > 1 and n_items > 1):
        jobs = min(jobs, max(1, n_items))
        return ProcessExecutor(options, jobs, options.threads or default_threads(jobs))
    set_threads(options.threads or default_threads(1))
    return InlineExecutor(options, runner)


def item_files(item: WorkItem) -> list[str]:
    """Every file a work item reads: its model, its input sets, label files and reference inputs
    (what a remote worker needs shipped)."""
    module, prop = item.task.module, item.task.prop
    files = [item.model_path if item.model_path is not None else (module.model.path if module.model else None)]
    for s in module.input_sets:
        files.append(s.path)
        if s.labels.kind == "file":
            files.append(str(s.labels.value))
    files.append(prop.reference_file)
    return list(dict.fromkeys(f for f in files if f))


def relocate(item: WorkItem, paths: dict[str, str]) -> WorkItem:
    """The item with the files of ``item_files`` at other paths (where a remote worker keeps them);
    names not in ``paths`` stay as they are."""
    def moved(path):
        return paths.get(path, path) if path else path

    module, prop = item.task.module, item.task.prop
    sets = []
    for s in module.input_sets:
        labels = s.labels
        if labels.kind == "file":
            labels = dataclasses.replace(labels, value=moved(str(labels.value)))
        sets.append(dataclasses.replace(s, path=moved(s.path), labels=labels))
    model_path = moved(item.model_path)
    if item.model_path is None and module.model is not None:
        model_path = moved(module.model.path)
    module = dataclasses.replace(module, input_sets=tuple(sets))
    prop = dataclasses.replace(prop, reference_file=moved(prop.reference_file))
    task = dataclasses.replace(item.task, module=module, prop=prop)
    return dataclasses.replace(item, task=task, model_path=model_path)
