"""Shards: a task over many inputs split into parts of at most ``MAX_SHARD`` inputs.

A shard is the same task with its input set narrowed by ``select`` to a contiguous run of the
inputs (their names and order unchanged); its cache entry is its own, and the pipeline merges the
shards' input-set summaries back into one (``models.sanity.merge``). Shards let several workers
(``--jobs``, Ray) share an input set, and they are cut the same way whatever runs them: the
searches draw their random numbers per batch, so a shard's records depend on its inputs alone,
and the in-process run, a process pool and a Ray cluster give the same records for any number of
workers (and share cache entries). 64 inputs keep the batches large enough that a forward pass
is not dominated by per-call costs.
"""

from __future__ import annotations

import dataclasses
import math

MAX_SHARD = 64  # inputs per task at most


def input_count(spec) -> int | None:
    """The number of inputs an input set gives (None when it cannot be read here: the worker
    then reports the error as it would without shards)."""
    from nnspec.models.inputs import load_input_set

    try:
        return len(load_input_set(spec).x)
    except Exception:
        return None


def indices(spec, n: int) -> list[int]:
    if spec.select is not None:
        return list(spec.select)
    return list(range(n if spec.first is None else min(n, spec.first)))


def shard_tasks(tasks: list, size: int = MAX_SHARD) -> list:
    """Each task over more than ``size`` inputs split into ceil(n / size) shards of contiguous
    inputs, sizes differing by at most one (they depend on n alone); other tasks unchanged."""
    counts: dict[tuple, list[int] | None] = {}
    out = []
    for task in tasks:
        if task.input_set < 0 or task.shard is not None or task.prop.boxes:
            out.append(task)
            continue
        spec = task.module.input_sets[task.input_set]
        if spec.first is not None and spec.first <= size or spec.select is not None and len(spec.select) <= size:
            out.append(task)  # small by its own statement: no need to read the file
            continue
        key = (task.module.file, task.input_set)
        if key not in counts:
            # the file's length, then the selection applied as load_input_set applies it
            total = input_count(dataclasses.replace(spec, first=None, select=None))
            counts[key] = None if total is None else indices(spec, total)
        chosen = counts[key]
        if chosen is None or len(chosen) <= size:
            out.append(task)
            continue
        parts = math.ceil(len(chosen) / size)
        base, extra = divmod(len(chosen), parts)
        start = 0
        for k in range(parts):
            piece = chosen[start:start + base + (k < extra)]
            start += len(piece)
            narrowed = dataclasses.replace(spec, select=tuple(piece), first=None)
            sets = list(task.module.input_sets)
            sets[task.input_set] = narrowed
            module = dataclasses.replace(task.module, input_sets=tuple(sets))
            out.append(dataclasses.replace(task, module=module, shard=(k, parts)))
    return out
