"""What a solver returns: frozen records with typed stop reasons and a trace for plots."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch


class StopReason(str, Enum):
    BUDGET = "budget"  # the query budget would be exceeded by another iteration
    TIME = "time"  # the wall-clock budget ran out
    POLL_SIZE = "poll_size"  # the poll size fell below the tolerance: a mesh-local minimum
    TARGET = "target"  # the objective reached the caller's target (e.g. a violation was found)
    CALLBACK = "callback"  # the caller asked to stop

    def describe(self) -> str:
        return {
            "budget": "query budget used up",
            "time": "time budget used up",
            "poll_size": "poll size below tolerance (converged on the mesh)",
            "target": "target value reached",
            "callback": "stopped by the caller",
        }[self.value]


@dataclass(frozen=True, slots=True)
class TracePoint:
    queries: int
    best: float
    poll_size: float


@dataclass(frozen=True, slots=True)
class SolverResult:
    """The outcome of one problem: best point, its value, counts, why it stopped, and the trace."""

    x: torch.Tensor
    fun: float
    nfev: int
    nit: int
    stop: StopReason
    trace: tuple[TracePoint, ...]
