"""Spec text -> Lark parse tree -> frozen AST (``nnspec.syntax.ast``).

Lark is built once (LALR, positions on). Its errors never escape: they become ``SpecError`` with
the position of the offending token and a message naming what was expected instead.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import lark
from lark import Lark, Token, Transformer, v_args

from nnspec import resources
from nnspec.errors import DataError, SpecError
from nnspec.span import Span
from nnspec.syntax import ast

# Readable names for the terminals that appear in "expected ..." messages.
_TERMINAL_NAMES = {
    "NAME": "a name",
    "NUMBER": "a number",
    "STRING": 'a "string"',
    "CMP": "a comparison (<, <=, >, >=)",
    "EQ": "== or !=",
    "LEAST_LIKELY": "'least-likely'",
    "LABEL": "'label'",
    "$END": "the end of the file",
}


MAX_DIGITS = 309  # an integer literal longer than this is larger than any float
MAX_DEPTH = 100  # nesting of brackets, unary minus and operators in one expression
MAX_SPEC_CHARS = 4 * 2**20  # a spec states properties; data belongs in files next to it

_comments: list[Token] = []  # filled by the lexer during one parse (comments are ignored by the grammar)


@lru_cache(maxsize=1)
def _lark() -> Lark:
    text = resources.grammar_path().read_text(encoding="utf-8")
    # The contextual lexer only matches the terminals that the parser can take where it stands,
    # so words of the grammar ('tolerance', 'no', 'range', ...) stay usable as option names and values.
    kwargs = dict(parser="lalr", lexer="contextual", propagate_positions=True, maybe_placeholders=True,
                  lexer_callbacks={"COMMENT": _comments.append})
    try:  # the grammar's analysis cached by Lark (keyed by the grammar and options): 0.45 s of each start
        return Lark(text, cache=_grammar_cache(text), **kwargs)
    except Exception:  # an unwritable or stale cache file: build it afresh
        return Lark(text, **kwargs)


def _grammar_cache(text: str) -> str | bool:
    import hashlib
    import os
    import tempfile

    import lark

    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = os.path.join(base, "nnspec")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError:
        folder = tempfile.gettempdir()
    digest = hashlib.sha256((lark.__version__ + text).encode()).hexdigest()[:16]
    return os.path.join(folder, f"grammar-{digest}.lark")


@lru_cache(maxsize=1)
def keywords() -> frozenset[str]:
    """The words of the language ('within', 'require', ...). The contextual lexer reads them as
    names where the grammar takes no keyword (option names and values), but they never name a
    constant or a property, and a misplaced one is reported as itself."""
    import re

    return frozenset(t.pattern.value for t in _lark().terminals
                     if t.pattern.type == "str" and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", t.pattern.value))


def _terminal_text(name: str) -> str:
    if name in _TERMINAL_NAMES:
        return _TERMINAL_NAMES[name]
    try:
        pattern = _lark().get_terminal(name).pattern
    except KeyError:
        return name.lower()
    return f"'{pattern.value}'" if pattern.type == "str" else name.lower()


def _expected_text(expected: set[str]) -> str:
    names = sorted({_terminal_text(t) for t in expected})
    if len(names) > 8:
        names = names[:8] + ["..."]
    return ", ".join(names)


def _hint(expected: set[str]) -> str | None:
    if "WITHIN" in expected:
        return "a property needs a region: 'within linf(0.1)'"
    return None


def _syntax_error(err: lark.exceptions.UnexpectedInput, file: str, source: str) -> SpecError:
    line, column = max(getattr(err, "line", 1), 1), max(getattr(err, "column", 1), 1)
    if isinstance(err, lark.exceptions.UnexpectedCharacters):
        char = getattr(err, "char", None) or "?"
        span = Span(file, line, column, line, column + 1)
        return SpecError.at(span, f"unexpected character {char!r}")
    if isinstance(err, lark.exceptions.UnexpectedToken):
        tok = err.token
        history = getattr(err, "token_history", None) or []
        prev = history[-1] if history else None
        if prev is not None and prev.type == "NAME" and str(prev) in keywords():
            # a word of the language read as a name where a value could stand: the word is the mistake
            span = Span(file, prev.line, prev.column, prev.end_line or prev.line, prev.end_column or prev.column + 1)
            return SpecError.at(span, f"unexpected {str(prev)!r}", f"'{prev}' is a word of the language, not a value")
        if tok.type == "$END":
            lines = source.split("\n")  # Lark counts lines by "\n" only, as we must
            span = Span(file, len(lines), len(lines[-1]) + 1, len(lines), len(lines[-1]) + 2)
            return SpecError.at(span, f"unexpected end of file; expected {_expected_text(err.expected)}",
                                _hint(err.expected))
        span = Span(file, tok.line, tok.column, tok.end_line or tok.line,
                    tok.end_column or tok.column + len(str(tok)))
        return SpecError.at(span, f"unexpected {str(tok)!r}; expected {_expected_text(err.expected)}",
                            _hint(err.expected))
    return SpecError.at(Span(file, line, column, line, column + 1), "syntax error")


def parse_text(source: str, file: str = "<string>") -> ast.SpecFile:
    """Parse spec text into a frozen AST; raises ``SpecError`` with a position on bad syntax."""
    if source.startswith("\ufeff"):  # a UTF-8 byte-order mark, as some editors write
        source = source[1:]
    if len(source) > MAX_SPEC_CHARS:
        raise SpecError.at(Span(file, 1, 1, 1, 2), f"the spec is {len(source) / 2**20:.1f} MB; specs are limited "
                           f"to {MAX_SPEC_CHARS // 2**20} MB", "keep data in files that the spec names")
    _comments.clear()
    try:
        tree = _lark().parse(source)
    except lark.exceptions.UnexpectedInput as err:
        raise _syntax_error(err, file, source) from None
    _check_depth(tree, file)
    comments = tuple(ast.Comment(str(c), Span(file, c.line, c.column, c.end_line, c.end_column)) for c in _comments)
    try:
        statements = _ToAst(file).transform(tree)
    except lark.exceptions.VisitError as err:
        if isinstance(err.orig_exc, SpecError):
            raise err.orig_exc from None
        raise
    return ast.SpecFile(file, source, tuple(statements), comments)


def _check_depth(tree: lark.Tree, file: str) -> None:
    """Refuse parse trees nested deeper than MAX_DEPTH, found without recursion, so that every
    later stage (lowering, explain, fmt), which recurses over expressions, stays far from Python's
    recursion limit."""
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            meta = node.meta
            line, col = getattr(meta, "line", 1), getattr(meta, "column", 1)
            raise SpecError.at(Span(file, line, col, line, col + 1),
                               f"nested more than {MAX_DEPTH} levels deep", "use 'let' to name parts")
        stack.extend((child, depth + 1) for child in node.children if isinstance(child, lark.Tree))


def parse_file(path: str | Path) -> ast.SpecFile:
    path = Path(path)
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read spec file: {err}") from None
    return parse_text(source, str(path))


# ------------------------------------------------------------------ tree -> AST


@v_args(meta=True, inline=True)
class _ToAst(Transformer):
    def __init__(self, file: str):
        super().__init__()
        self.file = file

    # ----- helpers
    def _span(self, meta) -> Span:
        if getattr(meta, "empty", True):
            return Span.point(self.file)
        return Span(self.file, meta.line, meta.column, meta.end_line, meta.end_column)

    def _tok_span(self, tok: Token) -> Span:
        return Span(self.file, tok.line, tok.column, tok.end_line, tok.end_column)

    def _name(self, tok: Token) -> ast.Name:
        return ast.Name(str(tok), self._tok_span(tok))

    def _string(self, tok: Token) -> ast.String:
        return ast.String(str(tok)[1:-1], self._tok_span(tok))

    # ----- start
    def start(self, meta, *statements):
        return list(statements)

    # ----- expressions
    def number(self, meta, tok):
        text = str(tok)
        is_int = text.isdigit()
        if is_int and len(text.lstrip("0")) > MAX_DIGITS:  # int() itself refuses past 4,300 digits
            raise SpecError.at(self._tok_span(tok), f"the number has {len(text)} digits; it is too large "
                                                    "(more than 1.8e308)")
        return ast.Number(int(text) if is_int else float(text), is_int, self._tok_span(tok))

    def string(self, meta, tok):
        return self._string(tok)

    def name(self, meta, tok):
        return self._name(tok)

    def list(self, meta, *items):
        return ast.ListExpr(tuple(i for i in items if i is not None), self._span(meta))

    def _bin(op):  # noqa: N805 - a factory used in the class body
        def build(self, meta, left, right):
            return ast.BinOp(op, left, right, self._span(meta))
        return build

    add, sub, mul, div = _bin("+"), _bin("-"), _bin("*"), _bin("/")

    def neg(self, meta, operand):
        return ast.Neg(operand, self._span(meta))

    def call(self, meta, name, *args):
        args = [a for a in args if a is not None]
        pos = tuple(a for a in args if not isinstance(a, ast.KwArg))
        kws = tuple(a for a in args if isinstance(a, ast.KwArg))
        return ast.Call(self._name(name), pos, kws, self._span(meta))

    def pos_arg(self, meta, value):
        return value

    def kw_arg(self, meta, name, value):
        return ast.KwArg(self._name(name), value, self._span(meta))

    # ----- file-level statements
    def model_stmt(self, meta, path):
        return ast.ModelStmt(self._string(path), self._span(meta))

    def output_stmt(self, meta, kind):
        return ast.OutputStmt(self._name(kind), self._span(meta))

    def inputs_stmt(self, meta, path, *options):
        return ast.InputsStmt(self._string(path), tuple(options), self._span(meta))

    def input_key(self, meta, name):
        return ast.InputOption("key", self._name(name), self._span(meta))

    def input_labels(self, meta, source):
        return ast.InputOption("labels", source, self._span(meta))

    def input_first(self, meta, value):
        return ast.InputOption("first", value, self._span(meta))

    def input_select(self, meta, value):
        return ast.InputOption("select", value, self._span(meta))

    def input_layout(self, meta, name):
        return ast.InputOption("layout", self._name(name), self._span(meta))

    def input_scale(self, meta, value):
        return ast.InputOption("scale", value, self._span(meta))

    def labels_predicted(self, meta):
        return ast.LabelSource("predicted", None, self._span(meta))

    def labels_key(self, meta, name):
        return ast.LabelSource("key", self._name(name), self._span(meta))

    def labels_file(self, meta, path):
        return ast.LabelSource("file", self._string(path), self._span(meta))

    def labels_list(self, meta, items):
        return ast.LabelSource("list", items, self._span(meta))

    def domain_stmt(self, meta, value):
        return ast.DomainStmt(value, self._span(meta))

    def normalize_stmt(self, meta, mean, std):
        return ast.NormalizeStmt(mean, std, self._span(meta))

    def _new_name(self, tok: Token) -> ast.Name:
        """A name being defined: never a word of the language."""
        if str(tok) in keywords():
            raise SpecError.at(self._tok_span(tok), f"unexpected {str(tok)!r}; expected a name",
                               f"'{tok}' is a word of the language")
        return self._name(tok)

    def let_stmt(self, meta, name, value):
        return ast.LetStmt(self._new_name(name), value, False, self._span(meta))

    def param_stmt(self, meta, name, value):
        return ast.LetStmt(self._new_name(name), value, True, self._span(meta))

    def default_using_stmt(self, meta, call):
        return ast.DefaultUsingStmt(call, self._span(meta))

    # ----- properties
    def property_stmt(self, meta, name, condition, region, *clauses):
        requires = tuple(r for c in clauses if isinstance(c, tuple) for r in c)
        usings = [c for c in clauses if isinstance(c, ast.Call)]
        if len(usings) > 1:
            raise SpecError.at(usings[1].span, "a property takes one 'using' clause",
                               "merge the options into one solver call")
        return ast.PropertyStmt(self._new_name(name) if name is not None else None, condition, region,
                                requires, usings[0] if usings else None, self._span(meta))

    def robustness(self, meta, *parts):
        target = next((p for p in parts if isinstance(p, ast.Target)), None)
        margin = next((p[1] for p in parts if isinstance(p, tuple) and p[0] == "margin"), None)
        reading = next((p for p in parts if isinstance(p, ast.Name)), None)
        return ast.Robustness(target, margin, reading, self._span(meta))

    def target_least_likely(self, meta, tok):
        return ast.Target("least_likely", None, self._span(meta))

    def target_label(self, meta, value):
        return ast.Target("label", value, self._span(meta))

    def margin(self, meta, value):
        return ("margin", value)

    def reading(self, meta, name):
        return self._name(name)

    def uncertainty(self, meta, reference, cmp, threshold):
        return ast.Uncertainty(reference, str(cmp), threshold, self._span(meta))

    def ref_file(self, meta, path):
        return ast.KlReference("file", self._string(path), self._span(meta))

    def ref_input(self, meta, value):
        return ast.KlReference("input", value, self._span(meta))

    def reachability(self, meta, output, cmp, threshold):
        return ast.Reachability(output, str(cmp), threshold, self._span(meta))

    def reach_range(self, meta, output, tolerance):
        return ast.ReachRange(output, tolerance, self._span(meta))

    def tolerance(self, meta, value):
        return value

    def output_ref(self, meta, fn, index):
        index = None if isinstance(index, Token) and index.type == "LABEL" else index
        return ast.OutputRef(self._name(fn), index, self._span(meta))

    def max_radius(self, meta, target, reading):
        return ast.MaxRadius(target, reading, self._span(meta))

    def feature_robustness(self, meta, target, partition):
        return ast.FeatureRobustness(target, partition, self._span(meta))

    def region(self, meta, *parts):
        calls, restriction = parts[:-1], parts[-1]
        return ast.Region(calls[0], restriction, self._span(meta), tuple(calls[1:]))

    # ----- output formulas
    def formula_cond(self, meta, formula):
        return ast.FormulaCond(formula, self._span(meta))

    def f_or_op(self, meta, left, right):
        return ast.FLogic("or", left, right, self._span(meta))

    def f_and_op(self, meta, left, right):
        return ast.FLogic("and", left, right, self._span(meta))

    def f_not_op(self, meta, operand):
        return ast.FLogic("not", operand, None, self._span(meta))

    def f_compare(self, meta, left, op, right):
        return ast.FCompare(str(op), left, right, self._span(meta))

    def f_index(self, meta, name, index):
        return ast.FIndex(self._name(name), index, self._span(meta))

    def f_call(self, meta, name, *args):
        return ast.FCall(self._name(name), tuple(a for a in args if a is not None), self._span(meta))

    def restrict_call(self, meta, call):
        return call

    def restrict_feature(self, meta, partition, index):
        """on feature(grid(2, 2), 1): kept as a call named 'feature' with the partition and index."""
        return ast.Call(ast.Name("feature", self._span(meta)), (partition, index), (), self._span(meta))

    def require(self, meta, *reqs):
        return tuple(reqs)

    def req_no_violation(self, meta):
        return ast.Requirement("no_violation", None, None, None, self._span(meta))

    def req_proven(self, meta):
        return ast.Requirement("proven", None, None, None, self._span(meta))

    def req_bound(self, meta, name, cmp, value):
        return ast.Requirement("bound", self._name(name), str(cmp), value, self._span(meta))

    def using(self, meta, call):
        return call
