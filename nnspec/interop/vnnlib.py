"""VNN-LIB in: queries -> nnspec properties (``writing`` turns them into spec text, and nnspec's
properties into queries).

Parsing is the official ``vnnlib`` package's (it type-checks and converts to DNF). It reads
VNN-LIB 2.0; files in the competition's 1.0 form (``(declare-const X_0 Real)``, ``X_0``) are
rewritten to 2.0 first, line for line, so that its positions still name the original lines.

A query states the *unsafe* set: every assertion holds at a counterexample. Its DNF (the product
of the assertions' DNFs) splits into input constraints (single variables against constants: a box
per disjunct) and output constraints (linear atoms over Y). Disjuncts are grouped by their box, so a
query becomes a union of boxes, each with the disjunction of output conjunctions that would be a
counterexample there; the nnspec property is its negation (``always not (...)``), or the readable
special cases (``argmax(y) == k``, one flipped comparison).

Numbers: a bound is read from its text (``Literal.lexeme``) and compared as the model reads it
(rounded to its dtype, float32 for ONNX networks), so a counterexample lying on a bound as the file
states it is inside. Output constants are kept in float64 and compared at tolerance 0.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nnspec.errors import InputError
from nnspec.interop.writing import to_spec

_DECL = re.compile(r"\(\s*declare-const\s+([XY])_(\d+)\s+Real\s*\)")
_VAR = re.compile(r"\b([XY])_(\d+)\b")
_SCIENTIFIC = re.compile(r"(?<![\w.])(\d+(?:\.\d*)?|\.\d+)[eE]([+-]?\d+)\b")
MAX_CASES = 4096


class VnnlibError(InputError):
    """A query nnspec cannot read: one line naming file:line:col."""

    exit_code = 2


@dataclass(frozen=True)
class OutAtom:
    """c @ y + d <= 0 (``strict``: < 0): one comparison of an unsafe conjunction."""

    c: tuple[float, ...]
    d: float
    strict: bool

    def holds(self, y: np.ndarray) -> bool:
        v = float(np.dot(np.asarray(self.c, dtype=np.float64), y.astype(np.float64))) + self.d
        return v < 0 if self.strict else v <= 0


@dataclass
class Case:
    """One input box and the output conjunctions that make a counterexample inside it."""

    lower: np.ndarray  # float64 (n,)
    upper: np.ndarray
    unsafe: list[list[OutAtom]] = field(default_factory=list)  # a disjunction of conjunctions


@dataclass
class Query:
    path: str
    version: str  # "1.0" | "2.0"
    n_inputs: int
    n_outputs: int
    input_shape: tuple[int, ...]
    cases: list[Case]

    def violated_by(self, x: np.ndarray, y: np.ndarray, dtype=np.float32) -> bool:
        """The competition's check at tolerance 0: x inside some box (compared in the model's
        dtype, as the model reads the bounds) and y in that box's unsafe set (float64)."""
        xr = np.asarray(x, dtype=dtype).reshape(-1)
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        for case in self.cases:
            lo, hi = case.lower.astype(dtype), case.upper.astype(dtype)
            if not (np.all(xr >= lo) and np.all(xr <= hi)):
                continue
            if any(all(a.holds(y) for a in conj) for conj in case.unsafe):
                return True
        return False


# ---------------------------------------------------------------- reading


def read_query(path: str | Path) -> Query:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise VnnlibError(f"{path}: VNN-LIB file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise VnnlibError(f"{path}: cannot read ({err})") from None
    return parse_query(text, str(path))


def parse_query(text: str, name: str = "<vnnlib>") -> Query:
    import vnnlib

    version = "2.0" if "vnnlib-version" in text else "1.0"
    # the parser reads no exponents (5.8e-05, common in competition files): the same number,
    # written out exactly in positional form
    source = _SCIENTIFIC.sub(lambda m: _positional(m.group(0)), text)
    source = source if version == "2.0" else _from_v1(source, name)
    try:
        query = vnnlib.parse_query_string(source)
    except vnnlib.VNNLibException as err:
        raise VnnlibError(_error_text(str(err), name, text)) from None
    networks = list(query.networks)
    if len(networks) != 1:
        raise VnnlibError(f"{name}:1:1: the query declares {len(networks)} networks; nnspec verifies one")
    net = networks[0]
    inputs, outputs = list(net.inputs), list(net.outputs)
    if len(inputs) != 1 or len(outputs) != 1 or list(getattr(net, "hidden", []) or []):
        raise VnnlibError(f"{name}:1:1: the network must declare one input and one output (and no hidden nodes)")
    in_shape = tuple(int(d) for d in inputs[0].shape)
    out_shape = tuple(int(d) for d in outputs[0].shape)
    n_in, n_out = math.prod(in_shape), math.prod(out_shape)
    names = {inputs[0].name: "X", outputs[0].name: "Y"}
    terms: list[tuple[dict, list[OutAtom]]] = [({}, [])]
    for assertion in query.assertions:
        alternatives = []
        for conj in assertion.expr.to_dnf():
            alternatives.append(_conjunction(conj, names, in_shape, out_shape, n_out, name))
        new = []
        for bounds, atoms in terms:
            for b2, a2 in alternatives:
                merged = _merge(bounds, b2)
                if merged is not None:
                    new.append((merged, atoms + a2))
        if len(new) > MAX_CASES:
            raise VnnlibError(f"{name}:{_line(assertion)}:1: the query's disjunctive normal form has more than "
                              f"{MAX_CASES} terms")
        terms = new
    cases: dict[tuple, Case] = {}
    for bounds, atoms in terms:
        lo = np.full(n_in, -np.inf)
        hi = np.full(n_in, np.inf)
        for i, (l, u) in bounds.items():
            lo[i], hi[i] = l, u
        missing = np.flatnonzero(~(np.isfinite(lo) & np.isfinite(hi)))
        if len(missing):
            raise VnnlibError(f"{name}:1:1: input X[{missing[0]}] has no lower or no upper bound; nnspec checks "
                              f"bounded boxes")
        key = (lo.tobytes(), hi.tobytes())
        case = cases.setdefault(key, Case(lo, hi, []))
        case.unsafe.append(atoms)
    if not cases:
        raise VnnlibError(f"{name}:1:1: the input constraints are empty (no input satisfies them)")
    return Query(name, version, n_in, n_out, in_shape, list(cases.values()))


def _positional(text: str) -> str:
    from decimal import Decimal

    out = format(Decimal(text), "f")
    return out if "." in out else out + ".0"


_INTEGER = re.compile(r"(?<![\w.\[])(-?\d+)(?![\w.\]eE])")


def _from_v1(text: str, name: str) -> str:
    """VNN-LIB 1.0 -> 2.0, keeping every line where it was. Integer literals become reals
    ('-1' -> '-1.0': 1.0 has one numeric type, 2.0 types them)."""
    lines = [_INTEGER.sub(r"\1.0", line) if not line.lstrip().startswith(";") else line
             for line in text.split("\n")]
    counts = {"X": -1, "Y": -1}
    first = None
    for k, line in enumerate(lines):
        found = list(_DECL.finditer(line))
        for m in found:
            counts[m.group(1)] = max(counts[m.group(1)], int(m.group(2)))
        if found:
            first = k if first is None else first
            lines[k] = _DECL.sub("", line)
    if first is None or counts["X"] < 0 or counts["Y"] < 0:
        raise VnnlibError(f"{name}:1:1: no input (X_i) or output (Y_i) declarations: not a VNN-LIB 1.0 query "
                          f"(and no '(vnnlib-version <2.0>)')")
    lines[first] = (f"(declare-network N (declare-input X real [{counts['X'] + 1}]) "
                    f"(declare-output Y real [{counts['Y'] + 1}]))") + lines[first]
    body = "\n".join(lines)
    body = _VAR.sub(lambda m: f"{m.group(1)}[{m.group(2)}]", body)
    return "(vnnlib-version <2.0>) " + body


def _error_text(message: str, name: str, text: str) -> str:
    import json

    try:
        data = json.loads(message)
        err = data["errors"][0]
        line = int(err.get("line", 1))
        symbol = str(err.get("offendingSymbol", ""))
        col = _column(text, line, symbol)
        what = err.get("message", "error")
        hint = err.get("hint")
        return f"{name}:{line}:{col}: {what} '{_v1_name(symbol)}'" + (f" ({hint})" if hint else "")
    except (ValueError, KeyError, TypeError, IndexError):
        pass
    m = re.search(r"line (\d+), column (\d+)", message)
    if m:
        line, col = int(m.group(1)), int(m.group(2))
        if line == 1 and "vnnlib-version" not in text:  # the 2.0 header was prepended to line 1
            col = max(1, col - len("(vnnlib-version <2.0>) "))
        return f"{name}:{line}:{col}: VNN-LIB syntax error"
    return f"{name}:1:1: {message.splitlines()[0] if message else 'cannot parse the query'}"


def _v1_name(symbol: str) -> str:
    m = re.fullmatch(r"([XY])\[(\d+)\]", symbol)
    return f"{m.group(1)}_{m.group(2)}" if m else symbol


def _column(text: str, line: int, symbol: str) -> int:
    lines = text.split("\n")
    if not 1 <= line <= len(lines):
        return 1
    for candidate in (symbol, _v1_name(symbol)):
        if candidate and candidate in lines[line - 1]:
            return lines[line - 1].index(candidate) + 1
    return 1


def _line(node) -> int:
    try:
        return int(node.expr.line)
    except Exception:
        return 1


def _index(var, shape: tuple[int, ...]) -> int:
    idx = [int(i) for i in var.indices]
    flat = 0
    for i, d in zip(idx, shape):
        flat = flat * d + i
    return flat


def _literal(node) -> float | None:
    lexeme = getattr(node, "lexeme", None)
    if lexeme is not None:
        return float(lexeme)
    return None


def _conjunction(conj, names, in_shape, out_shape, n_out, name):
    """One conjunction of comparisons -> (input bounds {i: (lo, hi)}, output atoms)."""
    import vnnlib

    bounds: dict[int, tuple[float, float]] = {}
    atoms: list[OutAtom] = []
    for cmp in conj:
        lhs, rhs = cmp.lhs.to_linear_expr(), cmp.rhs.to_linear_expr()
        coeffs: dict[tuple[str, int], float] = {}
        for sign, lin in ((1.0, lhs), (-1.0, rhs)):
            for t in lin.terms:
                kind = names.get(t.var.name)
                if kind is None:
                    raise VnnlibError(f"{name}:{t.var.line}:1: unknown variable {t.var.name}")
                key = (kind, _index(t.var, in_shape if kind == "X" else out_shape))
                coeffs[key] = coeffs.get(key, 0.0) + sign * t.coeff
        # constants: from the literal text where the side is one literal (exact as the file states it)
        const = _side_constant(cmp.lhs, lhs) - _side_constant(cmp.rhs, rhs)
        coeffs = {k: v for k, v in coeffs.items() if v != 0}
        kinds = {k[0] for k in coeffs}
        op = {vnnlib.LessEqual: "<=", vnnlib.LessThan: "<", vnnlib.GreaterEqual: ">=", vnnlib.GreaterThan: ">",
              vnnlib.Equal: "==", vnnlib.NotEqual: "!="}.get(type(cmp))
        line = _cmp_line(cmp)
        if op is None or op == "!=":
            raise VnnlibError(f"{name}:{line}:1: comparison {op or type(cmp).__name__} is not supported")
        if kinds == {"X"}:
            if len(coeffs) != 1:
                raise VnnlibError(f"{name}:{line}:1: a linear constraint over several inputs is not a box; nnspec "
                                  f"reads input constraints as bounds of single variables")
            (_, i), a = next(iter(coeffs.items()))
            value = -const / a  # a x + const (op) 0
            upper = (op in ("<=", "<")) == (a > 0)
            lo, hi = bounds.get(i, (-math.inf, math.inf))
            if op == "==":
                lo, hi = max(lo, value), min(hi, value)
            elif upper:
                hi = min(hi, value)
            else:
                lo = max(lo, value)
            bounds[i] = (lo, hi)
        elif kinds == {"Y"}:
            c = [0.0] * n_out
            for (_, j), a in coeffs.items():
                c[j] = a
            if op in ("<=", "<", "=="):
                atoms.append(OutAtom(tuple(c), const, op == "<"))
            if op in (">=", ">", "=="):
                atoms.append(OutAtom(tuple(-v for v in c), -const, op == ">"))
        elif not kinds:
            raise VnnlibError(f"{name}:{line}:1: a comparison of constants")
        else:
            raise VnnlibError(f"{name}:{line}:1: a comparison mixing inputs and outputs is not supported")
    return bounds, atoms


def _side_constant(node, lin) -> float:
    value = _literal(node)
    if value is not None:
        return value
    neg = getattr(node, "expr", None)
    if neg is not None and _literal(neg) is not None and type(node).__name__ == "Negate":
        return -_literal(neg)
    return float(lin.constant)


def _cmp_line(cmp) -> int:
    for side in (cmp.lhs, cmp.rhs):
        line = getattr(side, "line", None)
        if line:
            return int(line)
    return 1


def _merge(a: dict, b: dict) -> dict | None:
    if not b:
        return a
    out = dict(a)
    for i, (lo, hi) in b.items():
        l0, h0 = out.get(i, (-math.inf, math.inf))
        lo, hi = max(lo, l0), min(hi, h0)
        if lo > hi:
            return None  # an empty disjunct
        out[i] = (lo, hi)
    return out


# ---------------------------------------------------------------- models and instances


def onnx_sizes(path: str | Path) -> tuple[int, int] | None:
    """(inputs, outputs) of an ONNX file from its declared shapes (a batch of 1 counts as 1);
    None when they are not all known."""
    import onnx

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception:
        return None
    inits = {i.name for i in graph.initializer}
    ins = [i for i in graph.input if i.name not in inits]
    if len(ins) != 1 or len(graph.output) != 1:
        return None

    def size(v):
        dims = [d.dim_value for d in v.type.tensor_type.shape.dim]
        if not dims or any(d <= 0 for d in dims[1:]):
            return None
        return math.prod(d if d > 0 else 1 for d in dims)

    a, b = size(ins[0]), size(graph.output[0])
    return None if a is None or b is None else (a, b)


def check_against_model(query: Query, model_path: str | Path) -> None:
    """A query and a network that do not fit: one line naming the query's declarations."""
    sizes = onnx_sizes(model_path)
    if sizes is None:
        return  # the model's own loader will judge it
    n_in, n_out = sizes
    for what, q, m in (("inputs", query.n_inputs, n_in), ("outputs", query.n_outputs, n_out)):
        if q != m:
            raise VnnlibError(f"{query.path}:{_decl_line(query.path, 'X' if what == 'inputs' else 'Y')}:1: the query "
                              f"declares {q} {what} but {Path(model_path).name} has {m}")


def _decl_line(path: str, var: str) -> int:
    try:
        for k, line in enumerate(Path(path).read_text(encoding="utf-8").split("\n"), 1):
            if f"declare-const {var}_" in line or f"declare-{'input' if var == 'X' else 'output'}" in line:
                return k
    except OSError:
        pass
    return 1


def read_instances(path: str | Path) -> list[tuple[Path, Path, float]]:
    """A VNN-COMP ``instances.csv``: (onnx, vnnlib, timeout) per line, paths relative to its folder."""
    import csv

    path = Path(path)
    out = []
    try:
        rows = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))
    except (OSError, UnicodeDecodeError) as err:
        raise VnnlibError(f"{path}: cannot read ({err})") from None
    for k, row in enumerate(rows, 1):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2:
            raise VnnlibError(f"{path}:{k}:1: expected onnx,vnnlib[,timeout]")
        try:
            timeout = float(row[2]) if len(row) > 2 and row[2].strip() else 0.0
        except ValueError:
            raise VnnlibError(f"{path}:{k}:{len(row[0]) + len(row[1]) + 3}: the timeout {row[2]!r} is not a number") from None
        out.append((path.parent / row[0].strip(), path.parent / row[1].strip(), timeout))
    return out


def model_for_query(vnnlib_path: Path) -> Path | None:
    """The model an instances.csv in the query's folder (or the one above) pairs it with."""
    vnnlib_path = vnnlib_path.resolve()
    for folder in (vnnlib_path.parent, vnnlib_path.parent.parent):
        csv_path = folder / "instances.csv"
        if csv_path.is_file():
            for onnx_path, v, _ in read_instances(csv_path):
                if v.resolve() == vnnlib_path:
                    return onnx_path
    return None


def property_name(vnnlib_path: Path) -> str:
    """A property name from a query's file name (prop_0_0.03 -> prop_0_0_03)."""
    stem = re.sub(r"\W", "_", Path(vnnlib_path).stem) or "prop"
    return stem if stem[0].isalpha() or stem[0] == "_" else "p_" + stem


def spec_source(vnnlib_path: Path, model: Path | None) -> tuple[Query, str]:
    query = read_query(vnnlib_path)
    if model is not None:
        check_against_model(query, model)
    return query, to_spec(query, None if model is None else str(Path(model).resolve()),
                          name=property_name(vnnlib_path))
