"""`nnspec fmt`: canonical, idempotent, comments kept, and the meaning never changes."""

from __future__ import annotations

import dataclasses
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nnspec.errors import SpecError
from nnspec.semantics import lower
from nnspec.syntax.format import format_spec
from nnspec.syntax.parser import parse_text
from tests.conftest import ROOT

SPECS = sorted((ROOT / "specs").glob("*.nnspec")) + sorted((ROOT / "tests" / "golden").glob("*.nnspec"))


def _meaning(text: str):
    """The lowered module with positions and source dropped: what the spec means."""
    module = lower(parse_text(text, "x/m.nnspec"))

    def strip(obj):
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return tuple((f.name, strip(getattr(obj, f.name))) for f in dataclasses.fields(obj)
                         if f.name not in ("span", "source"))
        if isinstance(obj, (tuple, list)):
            return tuple(strip(o) for o in obj)
        return obj
    data = strip(module)
    return tuple((k, v) for k, v in data if k != "properties"), tuple(
        tuple((k, v) for k, v in p if k != "name" or not str(v).count("@")) for p in dict(data)["properties"])


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_fmt_is_idempotent_and_keeps_meaning_and_comments(path):
    src = path.read_text()
    once = format_spec(parse_text(src, str(path)))
    assert format_spec(parse_text(once, str(path))) == once
    assert _meaning(once) == _meaning(src)
    assert re.findall(r"#[^\n]*", src) == re.findall(r"#[^\n]*", once)


def test_fmt_layout():
    src = ('  # head\nmodel   "m.onnx"   # the net\nlet  a=1+2*3\n\n\n'
           'property p :robustness   against 3 within linf( a ) require no violation,estimate>=0.1 using mads( budget = 5 )')
    assert format_spec(parse_text(src)) == ('# head\nmodel "m.onnx"  # the net\nlet a = 1 + 2 * 3\n\n'
                                            "property p: robustness against 3 within linf(a)\n"
                                            "    require no violation, estimate >= 0.1\n    using mads(budget=5)\n")


def test_fmt_keeps_operator_grouping():
    for text in ["let a = (1 - 2) - 3", "let a = 1 - (2 - 3)", "let a = (1 + 2) * 3", "let a = 2 / (3 * 4)",
                 "let a = -(1 + 2)", "let a = 1 - -2"]:
        out = format_spec(parse_text(text))
        assert lower(parse_text(out)).parameters == lower(parse_text(text)).parameters
        env_a = parse_text(out).statements[0]
        from nnspec.semantics.values import evaluate
        assert evaluate(env_a.value, {}) == evaluate(parse_text(text).statements[0].value, {})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(st.sampled_from([p.read_text() for p in SPECS]), st.integers(0, 5000), st.integers(0, 5000))
def test_fmt_round_trip_on_mutated_specs(seed, i, j):
    words = seed.split(" ")
    words[i % len(words)], words[j % len(words)] = words[j % len(words)], words[i % len(words)]
    text = " ".join(words)
    try:
        meaning = _meaning(text)
    except SpecError:
        return
    out = format_spec(parse_text(text))
    assert _meaning(out) == meaning
    assert format_spec(parse_text(out)) == out


def test_docs_language_examples_are_valid_specs():
    doc = (ROOT / "docs" / "language.md").read_text()
    blocks = re.findall(r"```\n(.*?)```", doc, flags=re.S)
    assert blocks
    for block in blocks:
        lower(parse_text(block, str(ROOT / "specs" / "doc.nnspec")))


def test_fmt_cli_check_and_rewrite(cli, tmp_path):
    f = tmp_path / "a.nnspec"
    f.write_text("uncertainty   kl>0.3 within linf(0.1)  # design line\n")
    code, out, _ = cli("fmt", f, "--check")
    assert code == 1 and "would reformat" in out
    assert cli("fmt", f)[0] == 0
    assert f.read_text() == "uncertainty kl > 0.3 within linf(0.1)  # design line\n"
    assert cli("fmt", f, "--check")[0] == 0
