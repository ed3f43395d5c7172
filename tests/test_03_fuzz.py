"""No input text can make the parser, lowering or planner raise anything but a positioned SpecError."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nnspec.errors import SpecError
from nnspec.planning.plan import plan
from nnspec.semantics import lower
from nnspec.syntax.parser import parse_text

SPECS = sorted(Path(__file__).resolve().parent.parent.joinpath("specs").glob("*.nnspec")) + \
    sorted(Path(__file__).resolve().parent.joinpath("golden").glob("*.nnspec"))
SEEDS = [p.read_text() for p in SPECS]
TOKENS = ["robustness", "uncertainty", "reachability", "range", "within", "linf", "l2", "l1", "l0", "(", ")",
          "[", "]", ",", "=", "-", "+", "*", "/", ">", "<", ">=", "0", "1", "0.5", "1e-3", "eps", "let", "param",
          "model", "inputs", "\"x.npz\"", "key", "labels", "first", "select", "domain", "require", "no",
          "violation", "estimate", "using", "mads", "budget", "property", "p", ":", "against", "least-likely",
          "margin", "on", "window", "kl", "to", "input", "prob", "logit", "label", "maximum", "safe", "radius",
          "feature", "over", "grid", "default", "normalize", "mean", "std", "output", "logits", "#", "\n", "\"",
          "proven", "tolerance", "layout", "hwc", "scale", "reference", "1/0", "99999999999999999999"]


def _no_crash(text: str) -> None:
    try:
        module = lower(parse_text(text, "fuzz.nnspec"), {})
        plan([module])
    except SpecError as err:
        for d in err.diagnostics:
            assert d.span.file == "fuzz.nnspec" and d.span.line >= 1 and d.span.column >= 1, d
            assert d.message


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(TOKENS), max_size=30).map(" ".join))
def test_random_token_soup(text):
    _no_crash(text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_random_characters(text):
    _no_crash(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SEEDS), st.integers(0, 10_000), st.integers(0, 10_000),
       st.sampled_from(["delete", "insert", "swap", "dup"]), st.sampled_from(TOKENS))
def test_mutated_real_specs(seed, i, j, how, token):
    words = seed.split(" ")
    i, j = i % len(words), j % len(words)
    if how == "delete":
        del words[i]
    elif how == "insert":
        words.insert(i, token)
    elif how == "swap":
        words[i], words[j] = words[j], words[i]
    else:
        words.insert(j, words[i])
    _no_crash(" ".join(words))
