"""A hypothesis strategy for whole spec files that run: the grammar's statements with hostile
values (nan and inf spellings, huge and tiny numbers, keywords as values, strings where numbers
go, deep nesting), then a token-level mutation. Shared by the default test suite (a few dozen
examples) and ``bench/fuzz_check.py`` (10,000 and more).

The contract: ``nnspec check`` on any such file ends with exit 0, 1 or 2, never 3 (an internal
error), and within a bounded time (``--budget 10`` caps every search).
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "specs" / "models"

GOOD = ["1", "2", "0.5", "0.05", "0.01", "1e-3", "3", "0.1", "2 * eps", "eps", "0.3"]
HOSTILE = ["0", "10", "255", "-1", "1e999", "1e308", "1e-300", "1e-320", "9" * 40, "9" * 400, "1e308 * 10",
           "1e999 - 1e999", "1 / 0", "0 / 1", "-0", "nan", "inf", "true", "no", "\"x\"", "[]", "[1, 2]", "[[0, 1]]",
           "-" * 150 + "1"]
NUMBERS = GOOD + HOSTILE
WORDS = ["robustness", "uncertainty", "reachability", "range", "within", "tolerance", "no", "violation", "label",
         "least-likely", "proven", "maximum", "safe", "radius", "feature", "over", "on", "logits", "probabilities"]


_HOSTILE = [False]  # set per spec: one spec in three draws hostile values too


def _num() -> st.SearchStrategy[str]:
    """Sensible values, so that many specs run; in a hostile spec one value in four is hostile."""
    return st.sampled_from(GOOD * 6 + HOSTILE) if _HOSTILE[0] else st.sampled_from(GOOD)


@st.composite
def _call(draw, names, options) -> str:
    name = draw(st.sampled_from(names))
    values = _num() | st.sampled_from(WORDS) if _HOSTILE[0] else _num()
    args = [f"{o}={draw(values)}" for o in draw(st.lists(st.sampled_from(options), max_size=3, unique=True))]
    return f"{name}({', '.join(args)})"


@st.composite
def _property(draw) -> str:
    cond = draw(st.sampled_from([
        "robustness", "robustness", "robustness", "robustness margin {n}", "robustness against {n}", "robustness against least-likely",
        "robustness on logits", "uncertainty kl > {n}", "uncertainty kl < {n}", "reachability prob({n}) < {n}",
        "reachability logit(label) > {n}", "reachability range prob(label) tolerance {n}",
        "maximum safe radius", "feature robustness over grid({n}, {n})"])).replace("{n}", draw(_num()))
    norm = draw(st.sampled_from(["linf"] * 3 + ["l2", "l1", "l0", "lmax"]))
    region = f"within {norm}({draw(_num())})"
    if draw(st.booleans()):
        region += draw(st.sampled_from([" on window(0, 0, {n}, {n})", " on feature(grid(2, 2), {n})"])).replace(
            "{n}", draw(_num()))
    clauses = draw(st.lists(st.sampled_from([
        "require no violation", "require proven", "require estimate >= {n}", "require lower > {n}",
        "using {mads}", "using {game}"]), max_size=2, unique_by=lambda c: c.split()[0]))
    text = f"property p{draw(st.integers(0, 3))}: {cond} {region}"
    for c in clauses:
        text += " " + c.replace("{n}", draw(_num())).replace(
            "{mads}", draw(_call(["mads"], ["budget", "seed", "time", "tolerance", "refine", "ibp", "search", "poll"]))
        ).replace("{game}", draw(_call(["game"], ["budget", "tau", "upper", "lower", "epsilon", "weight"])))
    return text


@st.composite
def spec_files(draw) -> str:
    _HOSTILE[0] = draw(st.integers(0, 2)) == 2
    lines = [f'model "{MODELS / draw(st.sampled_from(["digits_mlp.onnx"] * 4 + ["digits_cnn.onnx"] * 4 + ["missing.onnx"]))}"']
    if draw(st.booleans()):
        lines.append(f"output {draw(st.sampled_from(['logits', 'logits', 'logits', 'probabilities', 'probabilities', 'scores']))}")
    inputs = f'inputs "{MODELS / "digits_test.npz"}" key x'
    inputs += draw(st.sampled_from([" labels key y"] * 4 + [" labels predicted", " labels [0, 1]", " labels [{n}]", ""]))
    inputs += draw(st.sampled_from([" first 2"] * 4 + [" first {n}", " select [0, 3]", " select [{n}]"]))
    inputs += draw(st.sampled_from([""] * 6 + [" scale {n}", " layout hwc"]))
    lines.append(inputs.replace("{n}", draw(_num())))
    if draw(st.booleans()):
        lines.append(draw(st.sampled_from(["domain [0, 1]", "domain [0, 1]", "domain [0, {n}]", "domain [[0, 1]]"])).replace(
            "{n}", draw(_num())))
    if draw(st.integers(0, 4)) == 4:
        lines.append(f"normalize mean {draw(_num())} std {draw(_num())}")
    lines.append(f"param eps = {draw(_num().filter(lambda v: 'eps' not in v))}")
    if draw(st.booleans()):
        lines.append("default using " + draw(_call(["mads", "game"], ["budget", "seed", "tolerance"])))
    props = draw(st.lists(_property(), min_size=1, max_size=2))
    lines += [p.replace("p0:", f"p{i}_:") for i, p in enumerate(props)]
    text = "\n".join(lines) + "\n"
    if draw(st.integers(0, 5)) == 5:  # a token-level mutation (hypothesis favours small draws: 5 is rare)
        words = text.split(" ")
        i = draw(st.integers(0, len(words) - 1))
        how = draw(st.sampled_from(["delete", "insert", "dup"]))
        if how == "delete":
            del words[i]
        elif how == "insert":
            words.insert(i, draw(st.sampled_from(WORDS + NUMBERS + ["(", ")", ",", "=", "#"])))
        else:
            words.insert(i, words[i])
        text = " ".join(words)
    return text
