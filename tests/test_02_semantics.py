"""Stage 2: AST -> typed properties. Constants fold, names resolve, ALL errors of a file come out
together, each with its exact position, message and hint."""

from __future__ import annotations

from pathlib import Path

import pytest

from nnspec.errors import SpecError
from nnspec.properties import expressions as ex
from nnspec.semantics import lower
from nnspec.syntax.parser import parse_text


def lowered(text: str, overrides=None, path="dir/t.nnspec"):
    return lower(parse_text(text, path), overrides)


def errors(text: str, overrides=None):
    with pytest.raises(SpecError) as info:
        lowered(text, overrides)
    return [(d.span.line, d.span.column, d.message, d.hint) for d in info.value.diagnostics]


def test_the_design_line_means_kl_from_uniform_above_threshold():
    (p,) = lowered("uncertainty kl > 0.3 within linf(0.1)").properties
    assert p.kind == "uncertainty" and p.expression == ex.KLDivergence(0.3, None)
    assert (p.region.norm, p.region.radius) == ("linf", 0.1)
    assert [r.kind for r in p.requirements] == ["no_violation"]  # the default requirement
    assert p.name == "uncertainty@1"


def test_constants_params_and_overrides():
    m = lowered("let a = 0.1\nparam eps = a * 2\nrobustness within linf(eps)")
    assert m.properties[0].region.radius == pytest.approx(0.2)
    m = lowered("param eps = 0.1\nrobustness within linf(eps)", {"eps": 0.05})
    assert m.properties[0].region.radius == 0.05 and m.parameters == (("eps", 0.05),)


def test_paths_resolve_relative_to_the_spec_file():
    m = lowered('model "m.onnx"\ninputs "d.npz"', path="specs/sub/a.nnspec")
    assert Path(m.model.path) == Path("specs/sub/m.onnx")
    assert Path(m.input_sets[0].path) == Path("specs/sub/d.npz")


def test_expressions_lower_to_their_objects():
    m = lowered("""
        robustness against 3 margin 0.1 on logits within linf(1)
        robustness against least-likely within linf(1)
        reachability prob(label) > 0.2 within l2(1)
        reachability range logit(4) within l1(1)
    """)
    kinds = [p.expression for p in m.properties]
    assert kinds[0] == ex.ConfidenceGap("label", 3, 0.1, "logits")
    assert kinds[1] == ex.ConfidenceGap("least_likely", None, 0.0, "probabilities")
    assert kinds[2] == ex.OutputThreshold("prob", None, ">", 0.2)
    assert kinds[3] == ex.OutputValue("logit", 4, 0.01)
    assert m.properties[3].requirements == ()  # a quantity never fails


def test_solver_options_are_typed_and_default_solver_applies():
    m = lowered("default using mads(budget=100)\nrobustness within linf(1)\n"
                "robustness within linf(1) using mads(seed=2, poll=gps, refine=false)")
    assert m.properties[0].solver.option_dict() == {"budget": 100}
    assert m.properties[1].solver.option_dict() == {"seed": 2, "poll": "gps", "refine": False}


def test_all_errors_of_a_file_are_reported_together():
    found = errors("""output logts
param eps = 0.1
robustness within lnf(eps) using mads(budgt=3, poll=gsp)
uncertainty kl < 0.3 within linf(-1) require estmate >= 0.1
reachability prob(3) > 1.5 within l2(epz)
""")
    assert found == [
        (1, 8, "unknown output kind 'logts'", "did you mean 'logits'?"),
        (3, 19, "unknown norm 'lnf'", "did you mean 'linf'?"),
        (3, 39, "solver 'mads' has no option 'budgt'", "did you mean 'budget'?"),
        (3, 53, "option 'poll' takes one of orthomads, gps, not 'gsp'", None),
        (4, 1, "uncertainty requires 'kl > eps', not 'kl < ...'", "the property says the output stays far from uniform"),
        (4, 34, "radius must be positive", None),
        (4, 46, "unknown bound 'estmate'", "did you mean 'estimate'?"),
        (5, 24, "a probability threshold must be in [0, 1], not 1.5", None),
        (5, 38, "unknown name 'epz'", "did you mean 'eps'?"),
    ]


@pytest.mark.parametrize("text, line, col, message", [
    ('model "a"\nmodel "b"', 2, 1, "a spec file names one model"),
    ("let x = 1\nlet x = 2", 2, 5, "'x' is already defined"),
    ("robustness within l0(1.5)", 1, 22, "an l0 radius (a count of dimensions) must be an integer, found 1.5"),
    ("robustness within linf(1, 2)", 1, 19, "linf(...) takes one radius"),
    ("robustness within linf(1) on patch(1,2,3,4)", 1, 30, "unknown restriction 'patch'"),
    ("robustness within linf(1) on feature(grd(2, 2), 0)", 1, 38, "unknown feature partition 'grd'"),
    ("robustness within linf(1) on feature(grid(2, 2), -1)", 1, 50, "a feature index must be >= 0"),
    ("robustness within linf(1) on window(0,0,0,4)", 1, 30, "a window needs row, col >= 0 and height, width >= 1"),
    ("robustness against -1 within linf(1)", 1, 20, "label -1 is negative"),
    ("robustness margin -0.1 within linf(1)", 1, 19, "the margin must be >= 0"),
    ("robustness on logts within linf(1)", 1, 15, "unknown reading 'logts'"),
    ("domain [1, 0]", 1, 8, "empty domain: 1 >= 0"),
    ("domain [0]", 1, 8, "a domain is [lo, hi] or a list of [lo, hi] pairs"),
    ("normalize mean [0.5, 0.5] std [0.2]", 1, 1, "mean has 2 values but std has 1"),
    ("normalize mean 0.5 std 0", 1, 24, "std must be positive"),
    ('inputs "a.npz" first 0', 1, 22, "'first' must be at least 1"),
    ('inputs "a.npz" first 2 select [1]', 1, 24, "use either 'first' or 'select', not both"),
    ('inputs "a.npz" layout nhwc', 1, 23, "unknown layout 'nhwc'"),
    ("robustness within linf(1) using madz()", 1, 33, "unknown solver 'madz'"),
    ("robustness within linf(1) using mads(budget=0)", 1, 45, "option 'budget' must be at least 1, not 0"),
    ("robustness within linf(1) using mads(budget=1.5)", 1, 45, "option 'budget' takes an integer, not 1.5"),
    ('robustness within linf("a")', 1, 24, 'the radius must be a number, found the string "a"'),
    ("let a = 1 / 0", 1, 13, "division by zero"),
    ("reachability softmax(1) > 0.1 within linf(1)", 1, 14, "unknown output 'softmax'"),
    ("property a: robustness within linf(1)\nproperty a: robustness within linf(2)", 2, 1, "property 'a' is defined twice in this file"),
])
def test_semantic_errors_table(text, line, col, message):
    (first, *_) = errors(text)
    assert (first[0], first[1]) == (line, col)
    assert first[2] == message


def test_set_on_a_let_is_refused_with_a_hint():
    (err,) = errors("let eps = 0.1\nrobustness within linf(eps)", {"eps": 0.2})
    assert err[2] == "--set eps: 'eps' is a let constant" and "param" in err[3]


def test_a_list_radius_is_a_sweep_planned_as_one_task_per_radius():
    from nnspec.planning.plan import plan

    m = lowered('inputs "x.npz"\nproperty s: robustness within linf([0.05, 0.01, 0.02]) require estimate >= 0.01')
    (p,) = m.properties
    assert p.sweep == (0.01, 0.02, 0.05) and p.region.radius == 0.05
    tasks = plan([m]).tasks
    assert [t.prop.region.radius for t in tasks] == [0.01, 0.02, 0.05]
    assert {t.prop.name for t in tasks} == {"s"}
    (err,) = errors("robustness within l2([0.1, -1])")
    assert err[2] == "a radius sweep is a non-empty list of positive numbers"
