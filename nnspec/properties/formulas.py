"""Output formulas: any condition over the network's outputs, with quantitative semantics.

A formula is built from terms over the outputs (``y[i]`` as the model gives them, ``prob(i)``,
``logit(i)``, constants, sums and scalings, ``max``/``min`` of terms or of all outputs) compared with
``<``, ``<=``, ``>``, ``>=`` (``==``/``!=`` and ``argmax(y) == k`` are rewritten into these when the
formula is lowered), combined with ``and``, ``or``, ``not``.

Its s(y) is the standard quantitative semantics (as in STL robustness): s(a <= b) = s(a < b) = b - a,
s(and) = min, s(or) = max, s(not f) = -s(f). Strict and non-strict relations are kept apart by an
exact boolean evaluation beside s: a formula holds exactly when its boolean value is true, and
where s is exactly 0 (a tie) the sign of s is set from the boolean (the smallest normal float,
positive or negative), so that every backend keeps reading "s < 0" as "violated" and a tie on a
strict relation (``y[label] > y[j]`` with equality) is a violation, as VNN-LIB counts it.

For proofs a formula over ``y`` (and ``logit``) with ``max``/``min`` at the top of a comparison has a
linear form: the violation set ``not f`` as a disjunction of conjunctions of linear atoms
``c @ y + d <= 0`` (or ``< 0``), which the bound engine refutes disjunct by disjunct.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Union

import torch

from nnspec.properties.expressions import Centres, SFunction, as_probabilities

MAX_DISJUNCTS = 4096

# ---------------------------------------------------------------- terms


@dataclass(frozen=True, slots=True)
class Const:
    value: float

    def text(self) -> str:
        return f"{self.value:g}"


@dataclass(frozen=True, slots=True)
class Out:
    """One output: ``index`` None is the input's label. ``reading``: y (as the model gives them),
    prob (softmax applied to logits) or logit (the raw outputs)."""

    index: int | None
    reading: str = "y"

    def text(self) -> str:
        i = "label" if self.index is None else str(self.index)
        return f"y[{i}]" if self.reading == "y" else f"{self.reading}({i})"


@dataclass(frozen=True, slots=True)
class Others:
    """max or min over every output except one (``index`` None: except the label); with
    ``index`` -1 over all outputs (``max(y)``)."""

    kind: str  # max | min
    index: int | None
    reading: str = "y"

    def text(self) -> str:
        if self.index == -1:
            return f"{self.kind}(y)"
        i = "label" if self.index is None else str(self.index)
        return f"{self.kind}(y[j] for j != {i})"


@dataclass(frozen=True, slots=True)
class Sum:
    items: tuple["Term", ...]

    def text(self) -> str:
        out = self.items[0].text()
        for t in self.items[1:]:
            if isinstance(t, Scale) and t.factor < 0:
                out += f" - {Scale(-t.factor, t.term).text()}"
            elif isinstance(t, Const) and t.value < 0:
                out += f" - {-t.value:g}"
            else:
                out += f" + {t.text()}"
        return out


@dataclass(frozen=True, slots=True)
class Scale:
    factor: float
    term: "Term"

    def text(self) -> str:
        inner = self.term.text()
        if isinstance(self.term, Sum):
            inner = f"({inner})"
        return inner if self.factor == 1 else f"-{inner}" if self.factor == -1 else f"{self.factor:g} * {inner}"


@dataclass(frozen=True, slots=True)
class Extreme:
    kind: str  # max | min
    items: tuple["Term", ...]

    def text(self) -> str:
        return f"{self.kind}({', '.join(t.text() for t in self.items)})"


Term = Union[Const, Out, Others, Sum, Scale, Extreme]

# ---------------------------------------------------------------- formulas

FLIP = {"<": ">=", "<=": ">", ">": "<=", ">=": "<"}


@dataclass(frozen=True, slots=True)
class Cmp:
    left: Term
    op: str  # < <= > >=
    right: Term

    def text(self) -> str:
        return f"{self.left.text()} {self.op} {self.right.text()}"


@dataclass(frozen=True, slots=True)
class And:
    items: tuple["Formula", ...]

    def text(self) -> str:
        return " and ".join(_paren(f, (Or,)) for f in self.items)


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple["Formula", ...]

    def text(self) -> str:
        return " or ".join(_paren(f, ()) for f in self.items)


@dataclass(frozen=True, slots=True)
class Not:
    item: "Formula"

    def text(self) -> str:
        return f"not {_paren(self.item, (And, Or))}"


Formula = Union[Cmp, And, Or, Not]


def _paren(f, kinds) -> str:
    return f"({f.text()})" if isinstance(f, kinds) else f.text()


# ---------------------------------------------------------------- evaluation


class _Env:
    """What evaluation needs: the raw outputs (P, K, m), the probabilities on demand, the labels."""

    def __init__(self, outputs: torch.Tensor, labels: torch.Tensor, outputs_are_logits: bool):
        self.raw = outputs.double()
        self.labels = labels
        self.logits = outputs_are_logits
        self._prob: torch.Tensor | None = None

    def values(self, reading: str) -> torch.Tensor:
        if reading == "prob":
            if self._prob is None:
                self._prob = as_probabilities(self.raw, self.logits)
            return self._prob
        return self.raw

    def index(self, index: int | None) -> torch.Tensor:
        """(P, K, 1) indices for gather."""
        P, K = self.raw.shape[:2]
        idx = self.labels if index is None else torch.full((P,), index, dtype=torch.long)
        return idx.view(-1, 1, 1).expand(P, K, 1)


def term_value(t: Term, env: _Env) -> torch.Tensor:
    if isinstance(t, Const):
        return torch.full(env.raw.shape[:2], t.value, dtype=torch.float64)
    if isinstance(t, Out):
        return env.values(t.reading).gather(2, env.index(t.index)).squeeze(2)
    if isinstance(t, Others):
        v = env.values(t.reading)
        if t.index != -1:
            fill = -torch.inf if t.kind == "max" else torch.inf
            v = v.scatter(2, env.index(t.index), fill)
        return v.amax(2) if t.kind == "max" else v.amin(2)
    if isinstance(t, Sum):
        return sum((term_value(i, env) for i in t.items[1:]), term_value(t.items[0], env))
    if isinstance(t, Scale):
        return t.factor * term_value(t.term, env)
    vals = torch.stack([term_value(i, env) for i in t.items])
    return vals.amax(0) if t.kind == "max" else vals.amin(0)


def evaluate(f: Formula, env: _Env) -> tuple[torch.Tensor, torch.Tensor]:
    """(s, holds), each (P, K): the quantitative value and the exact truth."""
    if isinstance(f, Cmp):
        a, b = term_value(f.left, env), term_value(f.right, env)
        s = b - a if f.op in ("<", "<=") else a - b
        holds = s > 0 if f.op in ("<", ">") else s >= 0
        return s, holds
    if isinstance(f, Not):
        s, h = evaluate(f.item, env)
        return -s, ~h
    parts = [evaluate(i, env) for i in f.items]
    s = torch.stack([p[0] for p in parts])
    h = torch.stack([p[1] for p in parts])
    if isinstance(f, And):
        return s.amin(0), h.all(0)
    return s.amax(0), h.any(0)


def signed(s: torch.Tensor, holds: torch.Tensor) -> torch.Tensor:
    """s with the sign of a tie (s == 0) taken from the exact truth value."""
    tiny = torch.tensor(torch.finfo(s.dtype).tiny, dtype=s.dtype)  # a tensor: a Python float would be cast to
    return torch.where(s == 0, torch.where(holds, tiny, -tiny), s)  # the default dtype, where it is 0


# ---------------------------------------------------------------- the property expression


@dataclass(frozen=True, slots=True)
class OutputFormula:
    """The expression of ``always <formula>``: s as above; ``linear_form`` for the bound engine."""

    formula: Formula

    def bind(self, centres: Centres, outputs_are_logits: bool) -> SFunction:
        labels, formula = centres.labels, self.formula

        def s(outputs: torch.Tensor) -> torch.Tensor:
            value, holds = evaluate(formula, _Env(outputs, labels, outputs_are_logits))
            dtype = outputs.dtype if outputs.is_floating_point() else torch.float64
            return signed(value.to(dtype), holds)  # the sign of a tie survives the cast

        return s

    def holds(self, outputs: torch.Tensor, label: int, outputs_are_logits: bool) -> bool:
        """The exact truth value at one output vector (m,), compared in float64 at tolerance 0."""
        _, h = evaluate(self.formula, _Env(outputs.reshape(1, 1, -1), torch.tensor([label]), outputs_are_logits))
        return bool(h[0, 0])

    def describe(self) -> str:
        return f"s of: {self.formula.text()} (and = min, or = max, not = -s, a <= b: b - a)"

    @property
    def uses_label(self) -> bool:
        return _mentions_label(self.formula)

    def max_index(self) -> int:
        return _max_index(self.formula)

    def linear_form(self, n_outputs: int, label: int, outputs_are_logits: bool,
                    probabilities: bool = False) -> "LinearForm":
        """The violation set as disjuncts of linear atoms over the raw outputs (``probabilities``:
        or over the probabilities of logits, ``linear_form``); raises ``NotLinear`` naming the
        part that has none."""
        return linear_form(Not(self.formula), n_outputs, label, outputs_are_logits, probabilities)

    def reads_probabilities(self) -> bool:
        """Whether a term reads ``prob``."""
        return any(leaf.reading == "prob" for t in _terms(self.formula) for leaf in _leaves(t))


# ---------------------------------------------------------------- linear forms


class NotLinear(ValueError):
    pass


@dataclass(frozen=True)
class Atom:
    """c @ y + d <= 0 (``strict``: < 0); ``over`` "p": c @ p + d, over the probabilities
    softmax(y) of the logits y (``linear_form(probabilities=True)``)."""

    c: tuple[float, ...]
    d: float
    strict: bool
    over: str = "y"


LinearForm = list[list[Atom]]  # a disjunction of conjunctions


def linear_form(f: Formula, m: int, label: int, outputs_are_logits: bool = True,
                probabilities: bool = False) -> LinearForm:
    """f as a DNF over linear atoms of the raw outputs (negations pushed to the atoms, max/min at
    the top of a comparison expanded into conjunctions or disjunctions). ``probabilities``: the
    outputs are (or are read as) softmax of logits, and atoms over them are atoms over "p" on the
    logits: ``prob`` terms of a model that gives logits, every term of one that gives probabilities
    through a final softmax. An atom that mixes the two raises ``NotLinear``."""
    return _dnf(_nnf(f, False), m, label, outputs_are_logits, probabilities)


def _nnf(f: Formula, negate: bool) -> Formula:
    if isinstance(f, Not):
        return _nnf(f.item, not negate)
    if isinstance(f, Cmp):
        return Cmp(f.left, FLIP[f.op], f.right) if negate else f
    items = tuple(_nnf(i, negate) for i in f.items)
    if isinstance(f, And):
        return Or(items) if negate else And(items)
    return And(items) if negate else Or(items)


def _dnf(f: Formula, m: int, label: int, logits: bool, probs: bool = False) -> LinearForm:
    if isinstance(f, Cmp):
        return _atom_dnf(f, m, label, logits, probs)
    parts = [_dnf(i, m, label, logits, probs) for i in f.items]
    if isinstance(f, Or):
        out = [conj for p in parts for conj in p]
    else:
        size = 1
        for p in parts:
            size *= max(len(p), 1)
        if size > MAX_DISJUNCTS:
            raise NotLinear(f"the violation set has more than {MAX_DISJUNCTS} disjuncts")
        out = [[a for conj in combo for a in conj] for combo in itertools.product(*parts)]
    if len(out) > MAX_DISJUNCTS:
        raise NotLinear(f"the violation set has more than {MAX_DISJUNCTS} disjuncts")
    return out


def _expand(t: Term, m: int, label: int) -> tuple[str, list[Term]] | None:
    """A max/min at the top of a side: (kind, its items with Others resolved); None otherwise."""
    if isinstance(t, Extreme):
        return t.kind, list(t.items)
    if isinstance(t, Others):
        skip = label if t.index is None else t.index
        return t.kind, [Out(j, t.reading) for j in range(m) if j != skip]  # index -1 skips none
    return None


def _atom_dnf(f: Cmp, m: int, label: int, logits: bool, probs: bool) -> LinearForm:
    # as "small <= big" (or small < big)
    small, big = (f.left, f.right) if f.op in ("<", "<=") else (f.right, f.left)
    strict = f.op in ("<", ">")
    for side, other, is_big in ((big, small, True), (small, big, False)):
        ex = _expand(side, m, label)
        if ex is None:
            continue
        kind, items = ex
        # small <= max(S): some s; small <= min(S): every s; max(S) <= big: every s; min(S) <= big: some s
        some = (kind == "max") == is_big
        rel = "<" if strict else "<="
        atoms = [Cmp(small, rel, i) if is_big else Cmp(i, rel, big) for i in items]
        sub = Or(tuple(atoms)) if some else And(tuple(atoms))
        return _dnf(sub, m, label, logits, probs)
    reads: set[str] = set()
    c, d = _linear(big, m, label, logits, probs, reads)
    c2, d2 = _linear(small, m, label, logits, probs, reads)
    if len(reads) > 1:
        raise NotLinear(f"{f.text()} compares probabilities with logits")
    # small <= big  <=>  small - big <= 0: the atom is of the violation set f itself
    return [[Atom(tuple(a - b for a, b in zip(c2, c)), d2 - d, strict, over="p" if "p" in reads else "y")]]


def _linear(t: Term, m: int, label: int, logits: bool, probs: bool, reads: set[str]) -> tuple[list[float], float]:
    """``reads`` collects what the outputs are read as: "y" (as given) or "p" (probabilities of
    logits, with ``probs``: linear_form's ``probabilities``)."""
    if isinstance(t, Const):
        return [0.0] * m, t.value
    if isinstance(t, Out):
        if t.reading == "prob" and logits and not probs:
            raise NotLinear(f"{t.text()} is not linear in the network's outputs (state it over y)")
        reads.add("p" if probs and (t.reading == "prob" or not logits) else "y")
        c = [0.0] * m
        c[label if t.index is None else t.index] = 1.0
        return c, 0.0
    if isinstance(t, Sum):
        c, d = [0.0] * m, 0.0
        for i in t.items:
            ci, di = _linear(i, m, label, logits, probs, reads)
            c = [a + b for a, b in zip(c, ci)]
            d += di
        return c, d
    if isinstance(t, Scale):
        c, d = _linear(t.term, m, label, logits, probs, reads)
        return [t.factor * v for v in c], t.factor * d
    raise NotLinear(f"{t.text()} is not linear (max and min are linearised only at the top of a comparison)")


def _terms(f: Formula):
    if isinstance(f, Cmp):
        yield f.left
        yield f.right
    elif isinstance(f, Not):
        yield from _terms(f.item)
    else:
        for i in f.items:
            yield from _terms(i)


def _leaves(t: Term):
    if isinstance(t, (Out, Others)):
        yield t
    elif isinstance(t, (Sum, Extreme)):
        for i in t.items:
            yield from _leaves(i)
    elif isinstance(t, Scale):
        yield from _leaves(t.term)


def _mentions_label(f: Formula) -> bool:
    return any(leaf.index is None for t in _terms(f) for leaf in _leaves(t))


def _max_index(f: Formula) -> int:
    return max((leaf.index for t in _terms(f) for leaf in _leaves(t) if leaf.index is not None), default=-1)


def evaluate_atoms(form: LinearForm, y: torch.Tensor) -> bool:
    """True when y (m,) lies in the violation set the linear form describes (float64, exact)."""
    y = y.double()
    for conj in form:
        if all((float(torch.tensor(a.c, dtype=torch.float64) @ y) + a.d < 0) if a.strict else
               (float(torch.tensor(a.c, dtype=torch.float64) @ y) + a.d <= 0) for a in conj):
            return True
    return False
