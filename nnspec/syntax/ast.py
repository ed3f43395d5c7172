"""The frozen AST. It mirrors the text: nothing is resolved or checked here.

Every node carries the ``Span`` of the text it came from, so that the semantic stage (and even a
run-time check after the model is loaded) can point at the exact place in the spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from nnspec.span import Span

# ---------------------------------------------------------------- expressions


@dataclass(frozen=True, slots=True)
class Number:
    value: float
    is_int: bool
    span: Span


@dataclass(frozen=True, slots=True)
class String:
    value: str
    span: Span


@dataclass(frozen=True, slots=True)
class Name:
    id: str
    span: Span


@dataclass(frozen=True, slots=True)
class ListExpr:
    items: tuple["Expr", ...]
    span: Span


@dataclass(frozen=True, slots=True)
class BinOp:
    op: str  # one of + - * /
    left: "Expr"
    right: "Expr"
    span: Span


@dataclass(frozen=True, slots=True)
class Neg:
    operand: "Expr"
    span: Span


Expr = Union[Number, String, Name, ListExpr, BinOp, Neg]  # (a Call appears only as a feature restriction's partition)


@dataclass(frozen=True, slots=True)
class KwArg:
    name: Name
    value: Expr
    span: Span


@dataclass(frozen=True, slots=True)
class Call:
    """``name(arg, ..., key=value, ...)``: a norm, a solver, a partition or a restriction."""

    name: Name
    args: tuple[Expr, ...]
    kwargs: tuple[KwArg, ...]
    span: Span


# ---------------------------------------------------------------- file-level statements


@dataclass(frozen=True, slots=True)
class ModelStmt:
    path: String
    span: Span


@dataclass(frozen=True, slots=True)
class OutputStmt:
    kind: Name
    span: Span


@dataclass(frozen=True, slots=True)
class LabelSource:
    kind: str  # predicted | key | file | list
    value: Name | String | ListExpr | None
    span: Span


@dataclass(frozen=True, slots=True)
class InputOption:
    kind: str  # key | labels | first | select | layout | scale
    value: Name | Expr | LabelSource
    span: Span


@dataclass(frozen=True, slots=True)
class InputsStmt:
    path: String
    options: tuple[InputOption, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class DomainStmt:
    value: Expr
    span: Span


@dataclass(frozen=True, slots=True)
class NormalizeStmt:
    mean: Expr
    std: Expr
    span: Span


@dataclass(frozen=True, slots=True)
class LetStmt:
    name: Name
    value: Expr
    overridable: bool  # True for `param`, which `--set NAME=value` may override
    span: Span


@dataclass(frozen=True, slots=True)
class DefaultUsingStmt:
    solver: Call
    span: Span


# ---------------------------------------------------------------- properties


@dataclass(frozen=True, slots=True)
class Target:
    kind: str  # label | least_likely
    label: Expr | None
    span: Span


@dataclass(frozen=True, slots=True)
class Robustness:
    target: Target | None
    margin: Expr | None
    reading: Name | None
    span: Span


@dataclass(frozen=True, slots=True)
class KlReference:
    kind: str  # file | input
    value: Expr
    span: Span


@dataclass(frozen=True, slots=True)
class Uncertainty:
    reference: KlReference | None
    cmp: str
    threshold: Expr
    span: Span


@dataclass(frozen=True, slots=True)
class OutputRef:
    fn: Name  # prob | logit
    index: Expr | None  # None: the input's label
    span: Span


@dataclass(frozen=True, slots=True)
class Reachability:
    output: OutputRef
    cmp: str
    threshold: Expr
    span: Span


@dataclass(frozen=True, slots=True)
class ReachRange:
    output: OutputRef
    tolerance: Expr | None
    span: Span


@dataclass(frozen=True, slots=True)
class MaxRadius:
    target: Target | None
    reading: Name | None
    span: Span


@dataclass(frozen=True, slots=True)
class FeatureRobustness:
    target: Target | None
    partition: Call
    span: Span


@dataclass(frozen=True, slots=True)
class FIndex:
    """``y[i]`` in a formula."""

    name: Name
    index: "FExpr"
    span: Span


@dataclass(frozen=True, slots=True)
class FCall:
    """``max(...)``, ``prob(i)``, ``argmax(y)`` in a formula."""

    name: Name
    args: tuple["FExpr", ...]
    span: Span


@dataclass(frozen=True, slots=True)
class FCompare:
    op: str  # < <= > >= == !=
    left: "FExpr"
    right: "FExpr"
    span: Span


@dataclass(frozen=True, slots=True)
class FLogic:
    op: str  # and | or | not (``right`` None)
    left: "FExpr"
    right: "FExpr | None"
    span: Span


FExpr = Union[Number, Name, BinOp, Neg, FIndex, FCall, FCompare, FLogic]


@dataclass(frozen=True, slots=True)
class FormulaCond:
    formula: FExpr
    span: Span


Condition = Union[Robustness, Uncertainty, Reachability, ReachRange, MaxRadius, FeatureRobustness, FormulaCond]


@dataclass(frozen=True, slots=True)
class Region:
    norm: Call
    restriction: Call | None
    span: Span
    more: tuple[Call, ...] = ()  # further boxes of a union: within box(...) or box(...)


@dataclass(frozen=True, slots=True)
class Requirement:
    kind: str  # no_violation | proven | bound
    bound: Name | None
    cmp: str | None
    value: Expr | None
    span: Span


@dataclass(frozen=True, slots=True)
class PropertyStmt:
    name: Name | None
    condition: Condition
    region: Region
    requires: tuple[Requirement, ...]
    using: Call | None
    span: Span


Statement = Union[
    ModelStmt, OutputStmt, InputsStmt, DomainStmt, NormalizeStmt, LetStmt, DefaultUsingStmt,
    PropertyStmt,
]


@dataclass(frozen=True, slots=True)
class Comment:
    text: str  # with its leading '#'
    span: Span


@dataclass(frozen=True, slots=True)
class SpecFile:
    path: str
    source: str
    statements: tuple[Statement, ...]
    comments: tuple[Comment, ...] = ()
