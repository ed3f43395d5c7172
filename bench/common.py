"""Shared helpers for the benchmarks: locating external data, timing."""

from __future__ import annotations

import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def data_root() -> Path | None:
    from nnspec.resources import external_data_root

    return external_data_root()


def best_time(fn, repeat: int = 5, min_seconds: float = 0.3) -> float:
    """Best wall time of fn() over `repeat` rounds, each looped for at least `min_seconds`."""
    best = float("inf")
    for _ in range(repeat):
        n, start = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                break
        best = min(best, elapsed / n)
    return best


def paired_best_times(fns, repeat: int = 9, min_seconds: float = 0.2) -> list[float]:
    """Best times of several functions measured in alternation, so that a noisy machine slows
    them alike; a ratio of these is far steadier than of separately taken timings."""
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            best[i] = min(best[i], best_time(fn, repeat=1, min_seconds=min_seconds))
    return best
