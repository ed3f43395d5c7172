"""Constant folding of AST expressions into Python values, with positioned errors.

This is the one place where spec numbers come to exist, so it is also the one place that keeps
them finite: a literal too large for a float (``1e999``), an arithmetic result that overflows or is
undefined (``1e308 * 10``, ``1e999 - 1e999``) and an integer too large to be used as a float are
positioned errors here, never an ``inf`` or ``nan`` that a later "must be positive" check would let
through. ``--set`` values go through ``parse_override`` under the same rule.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from nnspec.errors import SpecError, suggest
from nnspec.syntax import ast


class Symbol(str):
    """A bare name that is no constant: an option value such as ``upper=mcts``."""


def evaluate(expr: ast.Expr, env: Mapping[str, Any], symbols: bool = False) -> Any:
    """Fold ``expr``; names resolve through ``env`` (or become ``Symbol`` when ``symbols``)."""
    if isinstance(expr, ast.Number):
        return _finite(expr.value, expr, "the number")
    if isinstance(expr, ast.String):
        return expr.value
    if isinstance(expr, ast.Name):
        if expr.id in env:
            return env[expr.id]
        if expr.id in ("true", "false"):
            return expr.id == "true"
        if symbols:
            return Symbol(expr.id)
        raise SpecError.at(expr.span, f"unknown name '{expr.id}'", suggest(expr.id, env))
    if isinstance(expr, ast.ListExpr):
        return [evaluate(item, env, symbols) for item in expr.items]
    if isinstance(expr, ast.Neg):
        value = evaluate(expr.operand, env, symbols)
        return -_number(value, expr.operand)  # negation keeps a finite number finite
    if isinstance(expr, ast.BinOp):
        left = _number(evaluate(expr.left, env, symbols), expr.left)
        right = _number(evaluate(expr.right, env, symbols), expr.right)
        if expr.op == "/" and right == 0:
            raise SpecError.at(expr.right.span, "division by zero")
        try:
            result = {"+": lambda: left + right, "-": lambda: left - right, "*": lambda: left * right,
                      "/": lambda: left / right}[expr.op]()
        except OverflowError:
            result = math.inf
        return _finite(result, expr, "the result")
    raise SpecError.at(getattr(expr, "span"), "not a value")  # pragma: no cover


# Integers beyond this cannot become a float64; the spec language has no use for them.
MAX_MAGNITUDE = 1.7976931348623157e308


def _finite(value: Any, node: ast.Expr, what: str) -> Any:
    """``value`` when it is a finite number that fits a float; else a positioned error."""
    if isinstance(value, int) and not isinstance(value, bool):
        if abs(value) > MAX_MAGNITUDE:
            raise SpecError.at(node.span, f"{what} is too large (more than 1.8e308)")
        return value
    if isinstance(value, float) and not math.isfinite(value):
        if math.isnan(value):
            raise SpecError.at(node.span, f"{what} is not a number (nan)")
        raise SpecError.at(node.span, f"{what} is too large (it overflows to infinity)")
    return value


def _number(value: Any, node: ast.Expr) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError.at(node.span, f"expected a number, found {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    if isinstance(value, str):
        return f'the string "{value}"'
    if isinstance(value, list):
        return "a list"
    return repr(value)


def number(expr: ast.Expr, env: Mapping[str, Any], what: str) -> float:
    value = evaluate(expr, env)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError.at(expr.span, f"{what} must be a number, found {_kind(value)}")
    return float(value)


def integer(expr: ast.Expr, env: Mapping[str, Any], what: str) -> int:
    value = evaluate(expr, env)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError.at(expr.span, f"{what} must be an integer, found {_kind(value)}")
    return value


def parse_override(text: str) -> Any:
    """A `--set NAME=VALUE` value: a number, true/false, or else the string itself. Raises
    ValueError for a number that is not finite (nan, inf, 1e999) or too large for a float."""
    try:
        value = int(text)
    except ValueError:
        pass
    else:
        if abs(value) > MAX_MAGNITUDE:
            raise ValueError(f"{text[:40]}: too large (more than 1.8e308)")
        return value
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(value):
            raise ValueError(f"{text[:40]}: not a finite number")
        return value
    if text in ("true", "false"):
        return text == "true"
    return text
