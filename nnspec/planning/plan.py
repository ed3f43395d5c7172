"""The planner: chooses a backend and its options for every property, and lays out the tasks.

A ``Task`` is one property on one input set; the backend evaluates all of its inputs together
(tensor parallelism across inputs). Options are resolved here, once: the spec's explicit values,
then the CLI's (--seed, --budget, --bound-time), then defaults chosen from the input dimension.
Precedence: ``--budget`` and ``--bound-time`` override every budget and proof time, the spec's
included (a CI smoke run must be able to cap all of them); ``--seed`` only fills in where the spec
names no seed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from nnspec.backends import registry
from nnspec.backends.options import BackendInfo
from nnspec.errors import Diagnostic, SpecError
from nnspec.properties.spec import InputSetSpec, Property, SpecModule


@dataclass(frozen=True, slots=True)
class Task:
    module: SpecModule
    prop: Property
    input_set: int  # index into module.input_sets; -1: the box's midpoint (a spec without inputs)
    backend: str
    options: tuple[tuple[str, Any], ...]
    chosen_by: str  # "spec" | "planner"
    shard: tuple[int, int] | None = None  # (k, of): the k-th of ``of`` parts of its input set (planning.shard)

    @property
    def inputs(self) -> InputSetSpec:
        return self.module.input_sets[self.input_set]

    def option_dict(self) -> dict[str, Any]:
        return dict(self.options)


@dataclass(frozen=True, slots=True)
class Plan:
    tasks: tuple[Task, ...]


def default_options(info: BackendInfo, n_inputs: int | None, norm: str = "linf") -> dict[str, Any]:
    """Defaults that depend on the input dimension n (unknown before the model is loaded) and the
    norm: the extreme points of an L1 ball lie on the coordinate axes, which coordinate (GPS)
    polling hits and random OrthoMADS directions almost never do."""
    opts = info.defaults()
    n = n_inputs or 64
    if info.name == "game":
        opts["budget"] = int(min(max(2000, 10 * n), 20000))
    if info.name == "mads":
        if norm == "l1":
            opts["poll"] = "gps"
        opts["budget"] = int(min(max(1000, 20 * n), 20000))
        opts["search"] = 8 if n <= 100 else 16
        # A full 2n poll costs 2n queries an iteration; past 32 directions, poll a fresh random
        # subset each iteration (the union stays dense), so that a budget buys many iterations.
        if 2 * n > 32:
            opts["directions"] = int(min(128, max(32, 4 * n ** 0.5)))
    return opts


def plan(modules: list[SpecModule], *, seed: int | None = None, budget: int | None = None,
         bound_time: float | None = None, n_inputs: dict[str, int] | None = None,
         inline_inputs: bool = False) -> Plan:
    """Tasks for every property x input set; raises one SpecError for every unplannable property.
    ``budget`` and ``bound_time`` (``--budget``, ``--bound-time``) override every task's, where its
    backend has the option.

    ``inline_inputs``: the inputs come with the call (Python API), one task per property.
    """
    tasks: list[Task] = []
    problems: list[Diagnostic] = []
    for module in modules:
        boxed = not module.input_sets and not inline_inputs  # every property runs at its boxes' midpoints
        unboxed = [p for p in module.properties if not p.boxes or p.boxes[0].relative]
        if boxed and unboxed:
            problems.append(Diagnostic(unboxed[0].span, "no inputs to check the properties on",
                                       "add: inputs \"file.npz\" (or give the region as box(lower, upper))"))
            continue
        for prop in module.properties:
            chosen = _choose(prop, problems)
            if chosen is None:
                continue
            info, by = chosen
            opts = default_options(info, (n_inputs or {}).get(module.file), prop.region.norm)
            if seed is not None:
                opts["seed"] = seed
            if prop.solver is not None and prop.solver.name == info.name:
                opts.update(prop.solver.option_dict())  # the spec's explicit values win over defaults
            if budget is not None:  # ... but --budget wins over everything: a CI smoke run caps every task
                opts["budget"] = budget
            if bound_time is not None and "bound_time" in opts:  # ... as --bound-time caps its proofs
                opts["bound_time"] = bound_time
            for one in (q for r in _radii(prop) for q in _boxes(r)):
                sets = [-1] if boxed else range(len(module.input_sets) if not inline_inputs else 1)
                for i in sets:
                    tasks.append(Task(module, one, i, info.name, tuple(sorted(opts.items())), by))
    if problems:
        raise SpecError(problems)
    return Plan(tuple(tasks))


def _radii(prop: Property) -> list[Property]:
    """A sweep becomes one property per radius (same name and span: the report groups them)."""
    if not prop.sweep:
        return [prop]
    return [dataclasses.replace(prop, region=dataclasses.replace(prop.region, radius=r)) for r in prop.sweep]


def _boxes(prop: Property) -> list[Property]:
    """A union of boxes becomes one property per box, named NAME/box1, NAME/box2, ... (the
    property holds on the union exactly when it holds on each box)."""
    if len(prop.boxes) <= 1:
        return [prop]
    return [dataclasses.replace(prop, name=f"{prop.name}/box{b.index + 1}", boxes=(b,)) for b in prop.boxes]


def _choose(prop: Property, problems: list[Diagnostic]) -> tuple[BackendInfo, str] | None:
    norm = prop.region.norm
    if prop.solver is not None and prop.solver.explicit:
        info = registry.info(prop.solver.name)
        if prop.kind not in info.capabilities.kinds:
            problems.append(Diagnostic(prop.solver.span, f"solver '{info.name}' cannot evaluate {_kind_text(prop.kind)}"))
            return None
        if norm not in info.capabilities.norms:
            problems.append(Diagnostic(prop.solver.span, f"solver '{info.name}' does not search {norm} balls",
                                       f"it supports {', '.join(info.capabilities.norms)}"))
            return None
        return info, "spec"
    for info in registry.for_kind(prop.kind):
        if norm in info.capabilities.norms:
            return info, "planner"
    if norm == "l0":
        problems.append(Diagnostic(prop.span, f"no backend evaluates {_kind_text(prop.kind)} in a l0 ball",
                                   "for l0, state it as 'maximum safe radius' (the game backend)"))
    else:
        problems.append(Diagnostic(prop.span, f"no backend evaluates {_kind_text(prop.kind)} in a {norm} ball"))
    return None


def _kind_text(kind: str) -> str:
    return {"robustness": "robustness", "uncertainty": "uncertainty", "reachability": "reachability",
            "range": "a reachability range", "max_radius": "the maximum safe radius",
            "feature_robustness": "feature robustness", "formula": "an output formula"}[kind]
