"""The resolved, typed form of one spec file: what the semantic stage produces.

Nothing here refers to the syntax tree; everything keeps the ``Span`` it came from so that later
stages (binding to a model, running, reporting) can still point at the spec text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nnspec.properties.expressions import Expression
from nnspec.properties.regions import Ball, Box
from nnspec.span import Span


@dataclass(frozen=True, slots=True)
class LabelSpec:
    kind: str  # predicted | key | file | list | none
    value: Any  # array name, file path, list of ints, or None
    span: Span


@dataclass(frozen=True, slots=True)
class InputSetSpec:
    """Where one input set comes from and which part of it to use."""

    path: str  # resolved relative to the spec file
    key: str | None
    labels: LabelSpec
    first: int | None
    select: tuple[int, ...] | None
    layout: str | None  # chw | hwc | None (as stored)
    scale: float | None  # divide raw values by this (e.g. 255)
    span: Span


@dataclass(frozen=True, slots=True)
class Domain:
    """The valid input box: one pair for every dimension, or one pair per flattened dimension."""

    lower: tuple[float, ...]
    upper: tuple[float, ...]
    span: Span

    @property
    def per_dimension(self) -> bool:
        return len(self.lower) > 1


@dataclass(frozen=True, slots=True)
class Normalization:
    mean: tuple[float, ...]
    std: tuple[float, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Requirement:
    """What decides pass/fail in CI.

    ``no_violation``: no confirmed witness in the ball. ``proven``: a sound method proved the
    property (an estimate is not enough). ``bound``: a radius bound (estimate | lower | upper)
    compared with a value.
    """

    kind: str
    bound: str | None
    cmp: str | None
    value: float | None
    span: Span

    def describe(self) -> str:
        if self.kind == "bound":
            return f"{self.bound} {self.cmp} {self.value:g}"
        return {"no_violation": "no violation", "proven": "proven"}[self.kind]


@dataclass(frozen=True, slots=True)
class SolverChoice:
    name: str
    options: tuple[tuple[str, Any], ...]
    span: Span
    explicit: bool  # False when the planner chose it

    def option_dict(self) -> dict[str, Any]:
        return dict(self.options)


@dataclass(frozen=True, slots=True)
class Property:
    name: str
    kind: str  # robustness | uncertainty | reachability | range | max_radius | feature_robustness | formula
    expression: Expression | None  # None for the game kinds, which carry their own objective
    region: Ball
    requirements: tuple[Requirement, ...]
    solver: SolverChoice | None  # None: the planner chooses
    span: Span
    uses_label: bool
    reference_file: str | None = None
    reference_input: int | None = None
    partition: tuple[str, tuple[tuple[str, Any], ...]] | None = None  # feature robustness
    sweep: tuple[float, ...] | None = None  # radii of a sweep; the planner makes one task per radius
    boxes: tuple[Box, ...] = ()  # a box region (several: a union); ``region`` is then linf around the centre


@dataclass(frozen=True, slots=True)
class ModelRef:
    path: str
    span: Span


@dataclass(frozen=True, slots=True)
class SpecModule:
    """One spec file, resolved."""

    file: str
    source: str = field(repr=False)
    model: ModelRef | None
    outputs_are_logits: bool
    input_sets: tuple[InputSetSpec, ...]
    domain: Domain | None
    normalization: Normalization | None
    properties: tuple[Property, ...]
    parameters: tuple[tuple[str, Any], ...]  # final values of `param`s, after --set
