"""Searches written as generators: every model evaluation is ``s = yield points``. One search runs
with ``drive`` (its game's own evaluate); many run in lockstep with ``drive_together``, which
gathers the pending points of all of them into one batched call per round: tensor parallelism
across inputs, as MADS has for DeepQuant.
"""

from __future__ import annotations

from typing import Callable, Generator, Sequence

import numpy as np

Search = Generator[np.ndarray, np.ndarray, object]


def drive(search: Search, evaluate: Callable[[np.ndarray], np.ndarray]):
    """Run one search to its end; its return value."""
    try:
        points = next(search)
        while True:
            points = search.send(evaluate(points))
    except StopIteration as stop:
        return stop.value


def drive_together(searches: Sequence[Search],
                   evaluate_many: Callable[[list[tuple[int, np.ndarray]]], list[np.ndarray]]) -> list:
    """Run searches in lockstep: each round, one batched ``evaluate_many([(search index, points)])``
    for every search still running. Returns their return values, in order."""
    results: list = [None] * len(searches)
    pending: dict[int, np.ndarray] = {}
    for k, search in enumerate(searches):
        try:
            pending[k] = next(search)
        except StopIteration as stop:
            results[k] = stop.value
    while pending:
        keys = list(pending)
        values = evaluate_many([(k, pending[k]) for k in keys])
        for k, s in zip(keys, values):
            try:
                pending[k] = searches[k].send(s)
            except StopIteration as stop:
                results[k] = stop.value
                del pending[k]
    return results
