"""A query as text: the nnspec spec that states it (``nnspec import vnnlib``) and a VNN-LIB 1.0 file
(``nnspec export vnnlib``). Numbers are written as Python's shortest round-trip repr, so a bound
reads back as the same float64."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from nnspec.interop.vnnlib import OutAtom, Query


# ---------------------------------------------------------------- nnspec text


def _num(v: float) -> str:
    text = repr(float(v) + 0.0)  # + 0.0: no "-0"
    return text[:-2] if text.endswith(".0") and "e" not in text else text


def _linear_text(c, d) -> tuple[str, str]:
    """c @ y + d as (left, right) of 'left <= right': positive terms left, negative ones right,
    the constant on the right (y[1] <= -5, y[0] <= y[1] + 3)."""
    left, right = [], []
    for j, a in enumerate(c):
        if a == 0:
            continue
        term = f"y[{j}]" if abs(a) == 1 else f"{_num(abs(a))} * y[{j}]"
        (left if a > 0 else right).append(term)
    rhs = " + ".join(right)
    if not left:  # d <= (terms): the constant alone on the left
        return _num(d), rhs or "0"
    if d != 0:
        rhs = _num(-d) if not rhs else f"{rhs} {'-' if d > 0 else '+'} {_num(abs(d))}"
    return " + ".join(left) or "0", rhs or "0"


def _atom_text(a: OutAtom, negate: bool = False) -> str:
    left, right = _linear_text(a.c, a.d)
    rel = ("<" if a.strict else "<=") if not negate else (">=" if a.strict else ">")
    if "y[" not in left and "y[" in right:  # the outputs on the left: y[0] < 3.99, not 3.99 > y[0]
        left, right, rel = right, left, {"<": ">", "<=": ">=", ">": "<", ">=": "<="}[rel]
    return f"{left} {rel} {right}"


def _argmax_label(unsafe: list[list[OutAtom]], m: int) -> int | None:
    """k when the unsafe set is exactly 'some y[j] >= y[k]' over every j != k."""
    if len(unsafe) != m - 1 or any(len(conj) != 1 or conj[0].strict or conj[0].d != 0 for conj in unsafe):
        return None
    pairs = set()
    for (a,) in unsafe:
        pos = [j for j, v in enumerate(a.c) if v == 1]
        neg = [j for j, v in enumerate(a.c) if v == -1]
        if len(pos) != 1 or len(neg) != 1 or sum(1 for v in a.c if v != 0) != 2:
            return None
        pairs.add((pos[0], neg[0]))  # y[pos] - y[neg] <= 0: y[neg] >= y[pos]
    ks = {p for p, _ in pairs}
    if len(ks) != 1:
        return None
    k = ks.pop()
    return k if {n for _, n in pairs} == set(range(m)) - {k} else None


def formula_text(unsafe: list[list[OutAtom]], m: int) -> str:
    """The nnspec formula that holds exactly where no unsafe conjunction does."""
    k = _argmax_label(unsafe, m)
    if k is not None:
        return f"argmax(y) == {k}"
    if all(len(conj) == 1 for conj in unsafe):
        return " and ".join(_atom_text(conj[0], negate=True) for conj in unsafe)
    parts = [" and ".join(_atom_text(a) for a in conj) for conj in unsafe]
    if len(parts) == 1:
        return f"not ({parts[0]})"
    return "not (" + " or ".join(f"({p})" if len(c) > 1 else p for p, c in zip(parts, unsafe)) + ")"


def to_spec(query: Query, model: str | None, *, name: str = "prop", box_file=None) -> str:
    """The spec text of a query. ``box_file(case_index, lower, upper) -> str`` stores large boxes in
    an array file and returns the path to write (None: every box inline)."""
    lines = [f"# imported from {Path(query.path).name} (VNN-LIB {query.version}): "
             f"{query.n_inputs} inputs, {query.n_outputs} outputs, {len(query.cases)} box(es)"]
    if model is not None:
        lines.append(f'model "{model}"')
    by_formula: dict[str, list[int]] = {}
    for k, case in enumerate(query.cases):
        by_formula.setdefault(formula_text(case.unsafe, query.n_outputs), []).append(k)
    for f_no, (formula, ks) in enumerate(by_formula.items()):
        boxes = []
        for k in ks:
            case = query.cases[k]
            if box_file is not None and query.n_inputs > 16:
                boxes.append(f'box("{box_file(k, case.lower, case.upper)}")')
            else:
                boxes.append(f"box([{', '.join(_num(v) for v in case.lower)}], "
                             f"[{', '.join(_num(v) for v in case.upper)}])")
        pname = name if len(by_formula) == 1 else f"{name}_{f_no + 1}"
        lines.append(f"property {pname}: always {formula}")
        lines.append("    within " + "\n        or ".join(boxes))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- writing


def to_vnnlib(lower: np.ndarray, upper: np.ndarray, unsafe: list[list[OutAtom]], m: int, comment: str = "") -> str:
    """A VNN-LIB 1.0 query (the form every competition tool reads): the box, and the unsafe set
    as one assertion (a disjunction of conjunctions)."""
    n = len(lower)
    out = [f"; {line}" for line in comment.splitlines()] if comment else []
    out += [f"(declare-const X_{i} Real)" for i in range(n)] + [""]
    out += [f"(declare-const Y_{j} Real)" for j in range(m)] + [""]
    for i in range(n):
        out.append(f"(assert (>= X_{i} {_num(lower[i])}))")
        out.append(f"(assert (<= X_{i} {_num(upper[i])}))")
    out.append("")

    def atom(a: OutAtom) -> str:
        terms = [(v, j) for j, v in enumerate(a.c) if v != 0]
        if len(terms) == 1 and terms[0][0] in (1.0, -1.0):
            v, j = terms[0]
            rel = ("<" if a.strict else "<=") if v > 0 else (">" if a.strict else ">=")
            return f"({rel} Y_{j} {_num(-a.d / v)})"
        pos = [(v, j) for v, j in terms if v > 0]
        neg = [(-v, j) for v, j in terms if v < 0]

        def side(items, const):
            parts = [f"Y_{j}" if v == 1 else f"(* {_num(v)} Y_{j})" for v, j in items]
            if const:
                parts.append(_num(const))
            if not parts:
                return "0.0"
            return parts[0] if len(parts) == 1 else f"(+ {' '.join(parts)})"

        return (f"({'<' if a.strict else '<='} {side(pos, a.d if a.d > 0 else 0)} "
                f"{side(neg, -a.d if a.d < 0 else 0)})")

    conjs = [c if len(c) == 1 else None for c in unsafe]
    body = [atom(c[0]) if c is not None else f"(and {' '.join(atom(a) for a in conj)})"
            for c, conj in zip(conjs, unsafe)]
    out.append(f"(assert (or {' '.join(body)}))" if len(body) > 1 else f"(assert {body[0]})")
    return "\n".join(out) + "\n"
