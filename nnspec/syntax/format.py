"""`nnspec fmt`: the canonical layout of a spec, from its AST; comments kept, idempotent.

Layout: one statement per line; a property's `require` and `using` clauses on their own lines,
indented four spaces; a blank line kept wherever the source had one or more between statements;
own-line comments stay above the statement that follows them, trailing comments stay at the end of
their statement's line.
"""

from __future__ import annotations

from nnspec.syntax import ast


def _num(n: ast.Number) -> str:
    if n.is_int:
        return str(int(n.value))
    text = repr(float(n.value))
    return text[:-2] if text.endswith(".0") and "e" not in text else text


def expr(e) -> str:
    if isinstance(e, ast.Number):
        return _num(e)
    if isinstance(e, ast.String):
        return f'"{e.value}"'
    if isinstance(e, ast.Name):
        return e.id
    if isinstance(e, ast.ListExpr):
        return "[" + ", ".join(expr(i) for i in e.items) + "]"
    if isinstance(e, ast.Neg):
        inner = expr(e.operand)
        return f"-({inner})" if isinstance(e.operand, ast.BinOp) else f"-{inner}"
    if isinstance(e, ast.BinOp):
        left, right = expr(e.left), expr(e.right)
        if isinstance(e.left, ast.BinOp) and e.op in "*/" and e.left.op in "+-":
            left = f"({left})"
        if isinstance(e.right, ast.BinOp) and (e.op in "*/" or e.op == "-" or e.right.op in "+-" and e.op != "+"):
            right = f"({right})"
        return f"{left} {e.op} {right}"
    raise TypeError(type(e))  # pragma: no cover


_PRECEDENCE = {"or": 1, "and": 2, "not": 3, "cmp": 4}


def fexpr(e, outer: int = 0) -> str:
    """A formula, parenthesised only where precedence needs it."""
    if isinstance(e, ast.FLogic):
        level = _PRECEDENCE[e.op]
        if e.op == "not":
            text = f"not {fexpr(e.left, level)}"
        else:
            text = f"{fexpr(e.left, level)} {e.op} {fexpr(e.right, level + 1)}"
        return f"({text})" if level < outer else text
    if isinstance(e, ast.FCompare):
        text = f"{fexpr(e.left, 5)} {e.op} {fexpr(e.right, 5)}"
        return f"({text})" if _PRECEDENCE["cmp"] < outer else text
    if isinstance(e, ast.FIndex):
        return f"{e.name.id}[{fexpr(e.index, 5)}]"
    if isinstance(e, ast.FCall):
        return f"{e.name.id}({', '.join(fexpr(a) for a in e.args)})"
    if isinstance(e, ast.BinOp):
        left, right = fexpr(e.left, 5), fexpr(e.right, 5)
        if isinstance(e.left, ast.BinOp) and e.op in "*/" and e.left.op in "+-":
            left = f"({left})"
        if isinstance(e.right, ast.BinOp) and (e.op in "*/" or e.op == "-" or e.right.op in "+-" and e.op != "+"):
            right = f"({right})"
        text = f"{left} {e.op} {right}"
        return f"({text})" if outer > 5 else text
    if isinstance(e, ast.Neg):
        inner = fexpr(e.operand, 6)
        return f"-({inner})" if isinstance(e.operand, ast.BinOp) else f"-{inner}"
    return expr(e)


def call(c: ast.Call) -> str:
    args = [call(a) if isinstance(a, ast.Call) else expr(a) for a in c.args] + \
        [f"{k.name.id}={expr(k.value)}" for k in c.kwargs]
    return f"{c.name.id}({', '.join(args)})"


def _target(t: ast.Target | None) -> str:
    if t is None:
        return ""
    return " against least-likely" if t.kind == "least_likely" else f" against {expr(t.label)}"


def _output(o: ast.OutputRef) -> str:
    return f"{o.fn.id}({'label' if o.index is None else expr(o.index)})"


def condition(c) -> str:
    if isinstance(c, ast.Robustness):
        text = "robustness" + _target(c.target)
        text += f" margin {expr(c.margin)}" if c.margin is not None else ""
        return text + (f" on {c.reading.id}" if c.reading else "")
    if isinstance(c, ast.Uncertainty):
        ref = ""
        if c.reference is not None:
            ref = f" to reference {expr(c.reference.value)}" if c.reference.kind == "file" else \
                f" to input {expr(c.reference.value)}"
        return f"uncertainty kl{ref} {c.cmp} {expr(c.threshold)}"
    if isinstance(c, ast.Reachability):
        return f"reachability {_output(c.output)} {c.cmp} {expr(c.threshold)}"
    if isinstance(c, ast.ReachRange):
        tol = f" tolerance {expr(c.tolerance)}" if c.tolerance is not None else ""
        return f"reachability range {_output(c.output)}{tol}"
    if isinstance(c, ast.MaxRadius):
        return "maximum safe radius" + _target(c.target) + (f" on {c.reading.id}" if c.reading else "")
    if isinstance(c, ast.FormulaCond):
        return f"always {fexpr(c.formula)}"
    return f"feature robustness{_target(c.target)} over {call(c.partition)}"


def _requirement(r: ast.Requirement) -> str:
    if r.kind == "no_violation":
        return "no violation"
    if r.kind == "proven":
        return "proven"
    return f"{r.bound.id} {r.cmp} {expr(r.value)}"


def _input_option(o: ast.InputOption) -> str:
    if o.kind in ("key", "layout"):
        return f"{o.kind} {o.value.id}"
    if o.kind == "labels":
        src = o.value
        value = {"predicted": "predicted", "key": f"key {getattr(src.value, 'id', '')}",
                 "file": expr(src.value) if src.kind == "file" else "", "list": expr(src.value) if src.kind == "list" else ""}
        return f"labels {value[src.kind]}"
    return f"{o.kind} {expr(o.value)}"


def statement(s) -> list[str]:
    if isinstance(s, ast.ModelStmt):
        return [f"model {expr(s.path)}"]
    if isinstance(s, ast.OutputStmt):
        return [f"output {s.kind.id}"]
    if isinstance(s, ast.InputsStmt):
        return [" ".join([f"inputs {expr(s.path)}"] + [_input_option(o) for o in s.options])]
    if isinstance(s, ast.DomainStmt):
        return [f"domain {expr(s.value)}"]
    if isinstance(s, ast.NormalizeStmt):
        return [f"normalize mean {expr(s.mean)} std {expr(s.std)}"]
    if isinstance(s, ast.LetStmt):
        return [f"{'param' if s.overridable else 'let'} {s.name.id} = {expr(s.value)}"]
    if isinstance(s, ast.DefaultUsingStmt):
        return [f"default using {call(s.solver)}"]
    head = f"property {s.name.id}: " if s.name else ""
    region = f"within {' or '.join(call(c) for c in (s.region.norm,) + s.region.more)}" + (f" on {call(s.region.restriction)}" if s.region.restriction else "")
    lines = [f"{head}{condition(s.condition)} {region}"]
    if s.requires:
        lines.append("    require " + ", ".join(_requirement(r) for r in s.requires))
    if s.using is not None:
        lines.append(f"    using {call(s.using)}")
    return lines


def format_spec(spec: ast.SpecFile) -> str:
    comments = list(spec.comments)
    out: list[str] = []
    last_line = 0
    for stmt in spec.statements:
        before = [c for c in comments if c.span.line < stmt.span.line]
        first_line = min([stmt.span.line] + [c.span.line for c in before])
        if out and first_line > last_line + 1:
            out.append("")
        prev = None
        for c in before:
            if prev is not None and c.span.line > prev + 1:
                out.append("")
            out.append(c.text.rstrip())
            prev = c.span.line
            comments.remove(c)
        if prev is not None and stmt.span.line > prev + 1:
            out.append("")
        lines = statement(stmt)
        trailing = [c for c in comments if stmt.span.line <= c.span.line <= stmt.span.end_line]
        for c in trailing:
            comments.remove(c)
        if trailing:
            lines[-1] += "  " + "  ".join(c.text.rstrip() for c in trailing)
        out.extend(lines)
        last_line = max([stmt.span.end_line] + [c.span.line for c in trailing])
    if comments:
        if out and comments[0].span.line > last_line + 1:
            out.append("")
        out.extend(c.text.rstrip() for c in comments)
    return "\n".join(out) + "\n"
