"""`nnspec explain` is a stable text: golden files, rewritten with NNSPEC_UPDATE_GOLDEN=1."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nnspec.pipeline import load_specs
from nnspec.planning.explain import explain
from nnspec.planning.plan import plan

GOLDEN = Path(__file__).resolve().parent / "golden"


@pytest.mark.parametrize("spec", sorted(GOLDEN.glob("*.nnspec")), ids=lambda p: p.stem)
def test_explain_matches_golden(spec, monkeypatch):
    monkeypatch.chdir(GOLDEN.parent)
    rel = spec.relative_to(GOLDEN.parent)
    modules = load_specs([rel], {"eps": 0.2} if "every" in spec.name else {})
    text = explain(modules, plan(modules, n_inputs={str(rel): 64}))
    expected = spec.with_suffix(".explain.txt")
    if os.environ.get("NNSPEC_UPDATE_GOLDEN"):
        expected.write_text(text)
    assert text == expected.read_text()
