"""Constant folding of AST expressions into Python values, with positioned errors."""

from __future__ import annotations

from typing import Any, Mapping

from nnspec.errors import SpecError, suggest
from nnspec.syntax import ast


class Symbol(str):
    """A bare name that is no constant: an option value such as ``upper=mcts``."""


def evaluate(expr: ast.Expr, env: Mapping[str, Any], symbols: bool = False) -> Any:
    """Fold ``expr``; names resolve through ``env`` (or become ``Symbol`` when ``symbols``)."""
    if isinstance(expr, ast.Number):
        return expr.value
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
        return -_number(value, expr.operand)
    if isinstance(expr, ast.BinOp):
        left = _number(evaluate(expr.left, env, symbols), expr.left)
        right = _number(evaluate(expr.right, env, symbols), expr.right)
        if expr.op == "/" and right == 0:
            raise SpecError.at(expr.right.span, "division by zero")
        result = {"+": left + right, "-": left - right, "*": left * right}.get(expr.op)
        return left / right if expr.op == "/" else result
    raise SpecError.at(getattr(expr, "span"), "not a value")  # pragma: no cover


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
    """A `--set NAME=VALUE` value: a number, true/false, or else the string itself."""
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    if text in ("true", "false"):
        return text == "true"
    return text
