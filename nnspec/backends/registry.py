"""One registry of backends. Built-ins register the same way a plugin would; duplicates fail."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nnspec.backends.options import BackendInfo, Capabilities, OptionSpec

if TYPE_CHECKING:  # pragma: no cover
    from nnspec.backends.base import Backend

_INFOS: dict[str, BackendInfo] = {}
_FACTORIES: dict[str, str] = {}  # name -> "module:attribute", imported on first use


def register(info: BackendInfo, factory: str) -> None:
    if info.name in _INFOS:
        raise ValueError(f"backend {info.name!r} is already registered")
    _INFOS[info.name] = info
    _FACTORIES[info.name] = factory


def info(name: str) -> BackendInfo | None:
    return _INFOS.get(name)


def names() -> list[str]:
    return sorted(_INFOS)


def for_kind(kind: str) -> list[BackendInfo]:
    return [i for i in _INFOS.values() if kind in i.capabilities.kinds]


def create(name: str) -> "Backend":
    import importlib

    module, attr = _FACTORIES[name].split(":")
    return getattr(importlib.import_module(module), attr)()


MADS = BackendInfo(
    name="mads",
    summary="DeepQuant: Lipschitz-metric radius estimate and witnesses by tensor-parallel MADS "
            "(augmented Lagrangian or projection for L1/L2)",
    capabilities=Capabilities(
        kinds=("robustness", "uncertainty", "reachability", "range"),
        norms=("linf", "l2", "l1"),
        gives=("estimate", "upper"),
    ),
    options=(
        OptionSpec("budget", int, None, "model queries per input (planner: by dimension)", minimum=1),
        OptionSpec("seed", int, 0, "random seed; the same seed gives the same run", minimum=0),
        OptionSpec("time", float, 0.0, "wall-clock seconds per input, 0 for no limit", minimum=0),
        OptionSpec("poll", str, "orthomads", "poll directions: orthomads (dense, MADS) or gps ([I, -I])",
                   choices=("orthomads", "gps")),
        OptionSpec("directions", int, 0, "poll directions per iteration, 0 for all 2n", minimum=0),
        OptionSpec("search", int, None, "random search points per iteration (planner: by dimension)",
                   minimum=0),
        OptionSpec("tolerance", float, 1e-6, "stop when the poll size falls below this", minimum=0),
        OptionSpec("constraint", str, "project", "L1/L2 ball handling: project (exact projection) or "
                   "auglag (the paper's augmented Lagrangian)", choices=("project", "auglag")),
        OptionSpec("refine", bool, True, "move a found witness toward the centre"),
    ),
)
register(MADS, "nnspec.backends.quant:QuantBackend")
