"""Lowering an output formula's syntax (``always ...``) into ``nnspec.properties.formulas``.

Types are checked here, with the position of the offending part: a comparison where a number is
expected, a number where a condition is expected, a product of two outputs (not allowed: formulas
are linear in the outputs except for max, min and prob), an index that is not a whole number.
``==`` and ``!=`` are rewritten as a conjunction / disjunction of ``<=``/``<`` comparisons, and
``argmax(y) == k`` as ``y[k] > max(y[j] for j != k)`` (a tie is not an argmax).
"""

from __future__ import annotations

from typing import Any

from nnspec.errors import SpecError, suggest
from nnspec.properties import formulas as F
from nnspec.semantics.values import evaluate
from nnspec.syntax import ast

FUNCTIONS = ("max", "min", "prob", "logit", "argmax", "argmin")
OUTPUT_NAME = "y"


def lower_formula(node: ast.FExpr, env: dict[str, Any]) -> F.Formula:
    return _Lower(env).formula(node)


class _Lower:
    def __init__(self, env: dict[str, Any]):
        self.env = env

    # ---------------------------------------------------------------- conditions
    def formula(self, node) -> F.Formula:
        if isinstance(node, ast.FLogic):
            if node.op == "not":
                return F.Not(self.formula(node.left))
            left, right = self.formula(node.left), self.formula(node.right)
            kind = F.And if node.op == "and" else F.Or
            items = (left.items if isinstance(left, kind) else (left,)) + (right.items if isinstance(right, kind) else (right,))
            return kind(items)
        if isinstance(node, ast.FCompare):
            return self.compare(node)
        raise SpecError.at(node.span, "expected a condition here (a comparison such as y[0] <= 3.5, or "
                                      "argmax(y) == k)")

    def compare(self, node: ast.FCompare) -> F.Formula:
        for side, other in ((node.left, node.right), (node.right, node.left)):
            if isinstance(side, ast.FCall) and side.name.id in ("argmax", "argmin"):
                return self.arg_compare(node, side, other)
        left, right = self.term(node.left), self.term(node.right)
        if node.op == "==":
            return F.And((F.Cmp(left, "<=", right), F.Cmp(left, ">=", right)))
        if node.op == "!=":
            return F.Or((F.Cmp(left, "<", right), F.Cmp(left, ">", right)))
        return F.Cmp(left, node.op, right)

    def arg_compare(self, node: ast.FCompare, call: ast.FCall, other) -> F.Formula:
        which = call.name.id
        if len(call.args) != 1 or not (isinstance(call.args[0], ast.Name) and call.args[0].id == OUTPUT_NAME):
            raise SpecError.at(call.span, f"{which} takes the outputs: {which}(y)")
        if node.op not in ("==", "!="):
            raise SpecError.at(node.span, f"{which}(y) is an output index: compare it with == or !=")
        index = self.index(other)
        if which == "argmax":
            holds = F.Cmp(F.Out(index), ">", F.Others("max", index))
        else:
            holds = F.Cmp(F.Out(index), "<", F.Others("min", index))
        return holds if node.op == "==" else F.Not(holds)

    # ---------------------------------------------------------------- terms
    def term(self, node) -> F.Term:
        if isinstance(node, ast.Number):
            return F.Const(float(node.value))
        if isinstance(node, ast.Name):
            if node.id == OUTPUT_NAME:
                raise SpecError.at(node.span, "y is the output vector: use y[i], max(y) or argmax(y) == k")
            value = evaluate(node, self.env)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise SpecError.at(node.span, f"'{node.id}' is not a number")
            return F.Const(float(value))
        if isinstance(node, ast.Neg):
            return _scale(-1.0, self.term(node.operand))
        if isinstance(node, ast.BinOp):
            left, right = self.term(node.left), self.term(node.right)
            if node.op in "+-":
                if node.op == "-":
                    right = _scale(-1.0, right)
                if isinstance(left, F.Const) and isinstance(right, F.Const):
                    return F.Const(left.value + right.value)
                items = (left.items if isinstance(left, F.Sum) else (left,)) + \
                    (right.items if isinstance(right, F.Sum) else (right,))
                return F.Sum(items)
            if node.op == "*":
                if isinstance(left, F.Const):
                    return _scale(left.value, right)
                if isinstance(right, F.Const):
                    return _scale(right.value, left)
                raise SpecError.at(node.span, "a product of two outputs is not allowed: multiply by a number")
            if not isinstance(right, F.Const):
                raise SpecError.at(node.right.span, "divide by a number, not by an output")
            if right.value == 0:
                raise SpecError.at(node.right.span, "division by zero")
            return _scale(1.0 / right.value, left)
        if isinstance(node, ast.FIndex):
            if node.name.id != OUTPUT_NAME:
                raise SpecError.at(node.name.span, f"unknown output vector '{node.name.id}'",
                                   "the outputs are y: y[0], y[label]")
            return F.Out(self.index(node.index))
        if isinstance(node, ast.FCall):
            return self.call(node)
        raise SpecError.at(node.span, "expected a number or an output here, not a condition")

    def call(self, node: ast.FCall) -> F.Term:
        name = node.name.id
        if name not in FUNCTIONS:
            raise SpecError.at(node.name.span, f"unknown function '{name}'",
                               suggest(name, FUNCTIONS) or f"use one of {', '.join(FUNCTIONS)}")
        if name in ("argmax", "argmin"):
            raise SpecError.at(node.span, f"{name}(y) is compared with an index: {name}(y) == 3")
        if name in ("prob", "logit"):
            if len(node.args) != 1:
                raise SpecError.at(node.span, f"{name} takes one output index: {name}(3) or {name}(label)")
            return F.Out(self.index(node.args[0]), name)
        if not node.args:
            raise SpecError.at(node.span, f"{name}() needs at least one argument")
        if len(node.args) == 1 and isinstance(node.args[0], ast.Name) and node.args[0].id == OUTPUT_NAME:
            return F.Others(name, -1)
        items = tuple(self.term(a) for a in node.args)
        return items[0] if len(items) == 1 else F.Extreme(name, items)

    def index(self, node) -> int | None:
        """A constant output index, or None for the input's label."""
        if isinstance(node, ast.Name) and node.id == "label":
            return None
        try:
            value = evaluate(node, self.env)
        except SpecError:
            raise
        except Exception:  # a formula node where a constant index belongs
            value = None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise SpecError.at(node.span, "an output index is a whole number >= 0 or 'label'")
        return value


def _scale(k: float, t: F.Term) -> F.Term:
    if isinstance(t, F.Const):
        return F.Const(k * t.value)
    if isinstance(t, F.Scale):
        return F.Scale(k * t.factor, t.term)
    if isinstance(t, F.Sum):
        return F.Sum(tuple(_scale(k, i) for i in t.items))
    return t if k == 1 else F.Scale(k, t)
