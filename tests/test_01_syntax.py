"""Stage 1: text -> AST. Every construct parses; bad syntax gives an exact position and message."""

from __future__ import annotations

import pytest

from nnspec.errors import SpecError
from nnspec.syntax import ast
from nnspec.syntax.parser import parse_text


def one(text: str):
    (stmt,) = parse_text(text, "t.nnspec").statements
    return stmt


def test_the_design_line_parses_as_written():
    stmt = one("uncertainty kl > 0.3 within linf(0.1)")
    assert isinstance(stmt, ast.PropertyStmt) and stmt.name is None
    cond = stmt.condition
    assert isinstance(cond, ast.Uncertainty) and cond.cmp == ">" and cond.threshold.value == 0.3
    assert stmt.region.norm.name.id == "linf" and stmt.region.norm.args[0].value == 0.1


@pytest.mark.parametrize("text, kind", [
    ("robustness within linf(0.1)", ast.Robustness),
    ("robustness against 3 margin 0.2 on logits within l2(1)", ast.Robustness),
    ("robustness against least-likely within l1(1)", ast.Robustness),
    ("uncertainty kl to reference \"r.npy\" > 0.1 within linf(0.1)", ast.Uncertainty),
    ("uncertainty kl to input 2 >= 0.1 within linf(0.1)", ast.Uncertainty),
    ("reachability prob(label) < 0.9 within linf(0.1)", ast.Reachability),
    ("reachability logit(2) > -1 within linf(0.1)", ast.Reachability),
    ("reachability range prob(1) tolerance 0.01 within linf(0.1)", ast.ReachRange),
    ("maximum safe radius against 3 within l0(5)", ast.MaxRadius),
    ("feature robustness over grid(4, 4) within l2(1)", ast.FeatureRobustness),
])
def test_every_condition_kind_parses(text, kind):
    assert isinstance(one(text).condition, kind)


def test_file_level_statements_and_clauses():
    spec = parse_text('''
        model "m.onnx"   # trailing comment
        output probabilities
        inputs "d.npz" key x labels key y first 3 layout hwc scale 255
        inputs "e.npy" labels [1, 2] select [0, 4]
        domain [[0, 1], [-1, 1]]
        normalize mean [0.5] std [0.25]
        let a = 2 * (0.1 + 0.05) / 3
        param eps = -a + 1
        default using mads(budget=10)
        property p: robustness within linf(eps) on window(0, 0, 2, 2)
            require no violation, estimate >= 0.1, proven using mads(seed=3, poll=gps)
    ''', "t.nnspec")
    kinds = [type(s).__name__ for s in spec.statements]
    assert kinds == ["ModelStmt", "OutputStmt", "InputsStmt", "InputsStmt", "DomainStmt", "NormalizeStmt",
                     "LetStmt", "LetStmt", "DefaultUsingStmt", "PropertyStmt"]
    prop = spec.statements[-1]
    assert [r.kind for r in prop.requires] == ["no_violation", "bound", "proven"]
    assert prop.using.name.id == "mads" and prop.region.restriction.name.id == "window"
    assert [o.kind for o in spec.statements[2].options] == ["key", "labels", "first", "layout", "scale"]


def test_spans_point_at_the_text():
    stmt = one("  property fast: robustness within linf(0.25)")
    assert (stmt.name.span.line, stmt.name.span.column, stmt.name.span.end_column) == (1, 12, 16)
    num = stmt.region.norm.args[0]
    assert (num.span.column, num.span.end_column) == (41, 45)


@pytest.mark.parametrize("text, line, col, message", [
    ("robustness linf(0.1)", 1, 12, "unexpected 'linf'; expected 'against', 'margin', 'on', 'within'"),
    ("uncertainty kl > within linf(1)", 1, 18, "unexpected 'within'"),
    ("robustness within linf(0.1) require", 1, 36, "unexpected end of file"),
    ('model "x" $', 1, 11, "unexpected character '$'"),
    ("let within = 3", 1, 5, "unexpected 'within'; expected a name"),
    ("\n\nrobustness within linf(0.1) using mads() using mads()", 3, 48, "a property takes one 'using' clause"),
    ("robustness within linf(0.1))", 1, 28, "unexpected ')'"),
    ('inputs "x.npz" first', 1, 21, "unexpected end of file"),
])
def test_syntax_errors_have_exact_positions(text, line, col, message):
    with pytest.raises(SpecError) as info:
        parse_text(text, "bad.nnspec")
    d = info.value.diagnostics[0]
    assert (d.span.file, d.span.line, d.span.column) == ("bad.nnspec", line, col)
    assert d.message.startswith(message)


def test_missing_region_has_a_hint():
    with pytest.raises(SpecError) as info:
        parse_text("robustness margin 0.1 require no violation", "bad.nnspec")
    assert "within linf(0.1)" in (info.value.diagnostics[0].hint or "")
