"""Lowering: the frozen AST of one file -> a resolved ``SpecModule``.

Every check that can be made without the model happens here, and every error of the file is
collected before anything is raised, so a user fixes a file in one pass. Checks that need the
model (label in range, input shape, domain length) happen when the spec is bound to the model,
and still point at the spans recorded here.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

from nnspec.backends import registry
from nnspec.backends.options import coerce
from nnspec.errors import Diagnostic, SpecError, suggest
from nnspec.properties import expressions as ex
from nnspec.properties.formulas import OutputFormula
from nnspec.properties.regions import NORMS, Ball, Box, BoxBound, Window
from nnspec.semantics.formula import lower_formula
from nnspec.properties.spec import (
    Domain, InputSetSpec, LabelSpec, ModelRef, Normalization, Property, Requirement, SolverChoice,
    SpecModule,
)
from nnspec.semantics.values import Symbol, evaluate, integer, number
from nnspec.syntax import ast

READINGS = ("probabilities", "logits")
OUTPUT_KINDS = ("logits", "probabilities")
OUTPUT_FNS = ("prob", "logit")
BOUNDS = ("estimate", "lower", "upper")
LAYOUTS = ("chw", "hwc")
PARTITIONS = ("grid", "saliency", "sift", "superpixels")


class _Errors:
    """Collects diagnostics; ``attempt`` runs one check and records its SpecError, if any."""

    def __init__(self) -> None:
        self.found: list[Diagnostic] = []

    @contextmanager
    def attempt(self) -> Iterator[None]:
        try:
            yield
        except SpecError as err:
            self.found.extend(err.diagnostics)

    def add(self, span, message: str, hint: str | None = None) -> None:
        self.found.append(Diagnostic(span, message, hint))


def lower(spec: ast.SpecFile, overrides: Mapping[str, Any] | None = None) -> SpecModule:
    """Resolve one parsed file; raises one ``SpecError`` carrying every problem found."""
    return _Lowering(spec, dict(overrides or {})).run()


class _Lowering:
    def __init__(self, spec: ast.SpecFile, overrides: dict[str, Any]):
        self.spec = spec
        self.base = Path(spec.path).parent
        self.overrides = overrides
        self.errors = _Errors()
        self.env: dict[str, Any] = {}
        self.params: dict[str, Any] = {}
        self.defined_at: dict[str, ast.Name] = {}
        self.model: ModelRef | None = None
        self.outputs_are_logits = True
        self.output_seen = False
        self.inputs: list[InputSetSpec] = []
        self.domain: Domain | None = None
        self.normalization: Normalization | None = None
        self.default_solver: SolverChoice | None = None
        self.properties: list[Property] = []

    def run(self) -> SpecModule:
        handlers = {
            ast.ModelStmt: self.model_stmt, ast.OutputStmt: self.output_stmt,
            ast.InputsStmt: self.inputs_stmt, ast.DomainStmt: self.domain_stmt,
            ast.NormalizeStmt: self.normalize_stmt, ast.LetStmt: self.let_stmt,
            ast.DefaultUsingStmt: self.default_using_stmt, ast.PropertyStmt: self.property_stmt,
        }
        for stmt in self.spec.statements:
            with self.errors.attempt():
                handlers[type(stmt)](stmt)
        self.check_names()
        if self.errors.found:
            raise SpecError(self.errors.found)
        return SpecModule(
            file=self.spec.path, source=self.spec.source, model=self.model,
            outputs_are_logits=self.outputs_are_logits, input_sets=tuple(self.inputs),
            domain=self.domain, normalization=self.normalization,
            properties=tuple(self.properties), parameters=tuple(self.params.items()),
        )

    def path(self, node: ast.String) -> str:
        p = Path(node.value)
        return str(p if p.is_absolute() else self.base / p)

    def check_names(self) -> None:
        names = [p.name for p in self.properties]
        for prop in self.properties:
            if names.count(prop.name) > 1 and prop is not next(q for q in self.properties if q.name == prop.name):
                self.errors.add(prop.span, f"property '{prop.name}' is defined twice in this file")

    # ------------------------------------------------------------ file-level statements

    def model_stmt(self, stmt: ast.ModelStmt) -> None:
        if self.model is not None:
            raise SpecError.at(stmt.span, "a spec file names one model",
                               f"the first is at line {self.model.span.line}")
        if not stmt.path.value:
            raise SpecError.at(stmt.path.span, "the model path is empty")
        self.model = ModelRef(self.path(stmt.path), stmt.path.span)

    def output_stmt(self, stmt: ast.OutputStmt) -> None:
        if self.output_seen:
            raise SpecError.at(stmt.span, "'output' is given twice")
        self.output_seen = True
        kind = stmt.kind.id
        if kind not in OUTPUT_KINDS:
            raise SpecError.at(stmt.kind.span, f"unknown output kind '{kind}'",
                               suggest(kind, OUTPUT_KINDS) or "use logits or probabilities")
        self.outputs_are_logits = kind == "logits"

    def inputs_stmt(self, stmt: ast.InputsStmt) -> None:
        seen: dict[str, ast.InputOption] = {}
        values: dict[str, Any] = {}
        for opt in stmt.options:
            if opt.kind in seen:
                self.errors.add(opt.span, f"'{opt.kind}' is given twice for this input set")
                continue
            seen[opt.kind] = opt
            with self.errors.attempt():
                values[opt.kind] = self.input_option(opt)
        if "first" in values and "select" in values:
            self.errors.add(seen["select"].span, "use either 'first' or 'select', not both")
        labels = values.get("labels") or LabelSpec("none", None, stmt.span)
        self.inputs.append(InputSetSpec(
            path=self.path(stmt.path), key=values.get("key"), labels=labels,
            first=values.get("first"), select=values.get("select"), layout=values.get("layout"),
            scale=values.get("scale"), span=stmt.span,
        ))

    def input_option(self, opt: ast.InputOption) -> Any:
        if opt.kind == "key":
            return opt.value.id
        if opt.kind == "layout":
            layout = opt.value.id
            if layout not in LAYOUTS:
                raise SpecError.at(opt.value.span, f"unknown layout '{layout}'",
                                   suggest(layout, LAYOUTS) or "use chw or hwc")
            return layout
        if opt.kind == "first":
            n = integer(opt.value, self.env, "'first'")
            if n < 1:
                raise SpecError.at(opt.value.span, "'first' must be at least 1")
            return n
        if opt.kind == "select":
            items = evaluate(opt.value, self.env)
            if not isinstance(items, list) or not items or not all(
                    isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in items):
                raise SpecError.at(opt.value.span, "'select' takes a non-empty list of indices >= 0")
            return tuple(items)
        if opt.kind == "scale":
            scale = number(opt.value, self.env, "'scale'")
            if scale <= 0:
                raise SpecError.at(opt.value.span, "'scale' must be positive")
            return scale
        return self.label_source(opt.value)

    def label_source(self, src: ast.LabelSource) -> LabelSpec:
        if src.kind == "predicted":
            return LabelSpec("predicted", None, src.span)
        if src.kind == "key":
            return LabelSpec("key", src.value.id, src.span)
        if src.kind == "file":
            return LabelSpec("file", self.path(src.value), src.span)
        items = evaluate(src.value, self.env)
        if not isinstance(items, list) or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0
                                                  for i in items):
            raise SpecError.at(src.value.span, "labels must be integers >= 0")
        if any(i >= 2**31 for i in items):
            raise SpecError.at(src.value.span, f"label {max(items)} is out of range")
        return LabelSpec("list", tuple(items), src.span)

    def domain_stmt(self, stmt: ast.DomainStmt) -> None:
        if self.domain is not None:
            raise SpecError.at(stmt.span, "'domain' is given twice")
        value = evaluate(stmt.value, self.env)
        if not isinstance(value, list) or not value:
            raise SpecError.at(stmt.value.span, "a domain is [lo, hi] or a list of [lo, hi] pairs")
        pairs = value if isinstance(value[0], list) else [value]
        if not all(
                isinstance(p, list) and len(p) == 2 and all(_is_num(v) for v in p) for p in pairs):
            raise SpecError.at(stmt.value.span, "a domain is [lo, hi] or a list of [lo, hi] pairs")
        for i, (lo, hi) in enumerate(pairs):
            if lo >= hi:
                where = f" for dimension {i}" if len(pairs) > 1 else ""
                raise SpecError.at(stmt.value.span, f"empty domain{where}: {lo:g} >= {hi:g}")
        self.domain = Domain(tuple(float(p[0]) for p in pairs), tuple(float(p[1]) for p in pairs),
                             stmt.value.span)

    def normalize_stmt(self, stmt: ast.NormalizeStmt) -> None:
        mean, std = evaluate(stmt.mean, self.env), evaluate(stmt.std, self.env)
        mean = mean if isinstance(mean, list) else [mean]
        std = std if isinstance(std, list) else [std]
        for node, vals in ((stmt.mean, mean), (stmt.std, std)):
            if not vals or not all(_is_num(v) for v in vals):
                raise SpecError.at(node.span, "mean and std take a number or a list of numbers")
        if any(s <= 0 for s in std):
            raise SpecError.at(stmt.std.span, "std must be positive")
        if len(mean) != len(std):
            raise SpecError.at(stmt.span, f"mean has {len(mean)} values but std has {len(std)}")
        self.normalization = Normalization(tuple(map(float, mean)), tuple(map(float, std)), stmt.span)

    def let_stmt(self, stmt: ast.LetStmt) -> None:
        name = stmt.name.id
        if name in self.defined_at:
            raise SpecError.at(stmt.name.span, f"'{name}' is already defined",
                               f"at line {self.defined_at[name].span.line}")
        value = evaluate(stmt.value, self.env)
        refused = name in self.overrides and not stmt.overridable
        if name in self.overrides and stmt.overridable:
            value = self.overrides[name]
        if stmt.overridable:
            self.params[name] = value
        self.env[name] = value  # defined even when refused, so no follow-on "unknown name" errors
        self.defined_at[name] = stmt.name
        if refused:
            raise SpecError.at(stmt.name.span, f"--set {name}: '{name}' is a let constant",
                               "declare it with 'param' to allow --set")

    def default_using_stmt(self, stmt: ast.DefaultUsingStmt) -> None:
        if self.default_solver is not None:
            raise SpecError.at(stmt.span, "'default using' is given twice")
        self.default_solver = self.solver(stmt.solver)

    # ------------------------------------------------------------ properties

    def property_stmt(self, stmt: ast.PropertyStmt) -> None:
        name = stmt.name.id if stmt.name else f"{_kind_name(stmt.condition)}@{stmt.span.line}"
        parts: dict[str, Any] = {}
        with self.errors.attempt():
            parts.update(self.condition(stmt.condition))
        region, sweep, boxes = None, None, ()
        with self.errors.attempt():
            region, sweep, boxes = self.region(stmt.region)
        requirements: list[Requirement] = []
        for req in stmt.requires:
            with self.errors.attempt():
                requirements.append(self.requirement(req))
        solver = self.default_solver
        if stmt.using is not None:
            with self.errors.attempt():
                solver = self.solver(stmt.using)
        if "kind" not in parts or region is None:
            return
        if not requirements and parts["kind"] not in ("range", "max_radius", "feature_robustness"):
            requirements.append(Requirement("no_violation", None, None, None, stmt.span))
        self.properties.append(Property(
            name=name, kind=parts["kind"], expression=parts.get("expression"), region=region,
            requirements=tuple(requirements), solver=solver, span=stmt.span,
            uses_label=parts.get("uses_label", False), reference_file=parts.get("reference_file"),
            reference_input=parts.get("reference_input"), partition=parts.get("partition"),
            sweep=sweep, boxes=boxes,
        ))

    def condition(self, cond: ast.Condition) -> dict[str, Any]:
        if isinstance(cond, ast.Robustness):
            target, label = self.target(cond.target)
            margin = 0.0
            if cond.margin is not None:
                margin = number(cond.margin, self.env, "the margin")
                if margin < 0:
                    raise SpecError.at(cond.margin.span, "the margin must be >= 0")
            reading = self.reading(cond.reading)
            return {"kind": "robustness", "uses_label": True,
                    "expression": ex.ConfidenceGap(target, label, margin, reading)}
        if isinstance(cond, ast.Uncertainty):
            if cond.cmp not in (">", ">="):
                raise SpecError.at(cond.span, f"uncertainty requires 'kl > eps', not 'kl {cond.cmp} ...'",
                                   "the property says the output stays far from uniform")
            threshold = number(cond.threshold, self.env, "the KL threshold")
            if threshold < 0:
                raise SpecError.at(cond.threshold.span, "a KL divergence threshold must be >= 0")
            parts: dict[str, Any] = {"kind": "uncertainty"}
            ref = cond.reference
            if ref is not None and ref.kind == "file":
                parts["reference_file"] = self.path(ref.value)
            elif ref is not None:
                idx = integer(ref.value, self.env, "the reference input index")
                if idx < 0:
                    raise SpecError.at(ref.value.span, "the reference input index must be >= 0")
                parts["reference_input"] = idx
            parts["expression"] = ex.KLDivergence(threshold, None if ref is None else ref.kind)
            return parts
        if isinstance(cond, ast.Reachability):
            fn, index = self.output_ref(cond.output)
            threshold = number(cond.threshold, self.env, "the threshold")
            if fn == "prob" and not 0 <= threshold <= 1:
                raise SpecError.at(cond.threshold.span, f"a probability threshold must be in [0, 1], not {threshold:g}")
            return {"kind": "reachability", "uses_label": index is None,
                    "expression": ex.OutputThreshold(fn, index, cond.cmp, threshold)}
        if isinstance(cond, ast.ReachRange):
            fn, index = self.output_ref(cond.output)
            tol = 1e-2
            if cond.tolerance is not None:
                tol = number(cond.tolerance, self.env, "the tolerance")
                if tol <= 0:
                    raise SpecError.at(cond.tolerance.span, "the tolerance must be positive")
            return {"kind": "range", "uses_label": index is None,
                    "expression": ex.OutputValue(fn, index, tol)}
        if isinstance(cond, ast.MaxRadius):
            target, label = self.target(cond.target)
            self.reading(cond.reading)  # misclassification does not depend on the reading
            return {"kind": "max_radius", "uses_label": True,
                    "expression": ex.ConfidenceGap(target, label, 0.0, "logits")}
        if isinstance(cond, ast.FormulaCond):
            expression = OutputFormula(lower_formula(cond.formula, self.env))
            return {"kind": "formula", "uses_label": expression.uses_label, "expression": expression}
        target, label = self.target(cond.target)
        return {"kind": "feature_robustness", "uses_label": True,
                "expression": ex.ConfidenceGap(target, label, 0.0, "logits"),
                "partition": self.partition(cond.partition)}

    def target(self, target: ast.Target | None) -> tuple[str, int | None]:
        if target is None:
            return "untargeted", None
        if target.kind == "least_likely":
            return "least_likely", None
        label = integer(target.label, self.env, "the target label")
        if label < 0:
            raise SpecError.at(target.label.span, f"label {label} is negative")
        return "label", label

    def reading(self, reading: ast.Name | None) -> str:
        if reading is None:
            return "probabilities"
        if reading.id not in READINGS:
            raise SpecError.at(reading.span, f"unknown reading '{reading.id}'",
                               suggest(reading.id, READINGS) or "use 'on probabilities' or 'on logits'")
        return reading.id

    def output_ref(self, ref: ast.OutputRef) -> tuple[str, int | None]:
        if ref.fn.id not in OUTPUT_FNS:
            raise SpecError.at(ref.fn.span, f"unknown output '{ref.fn.id}'",
                               suggest(ref.fn.id, OUTPUT_FNS) or "use prob(K) or logit(K)")
        if ref.index is None:
            return ref.fn.id, None
        index = integer(ref.index, self.env, "the output index")
        if index < 0:
            raise SpecError.at(ref.index.span, f"output index {index} is negative")
        return ref.fn.id, index

    def partition(self, call: ast.Call) -> tuple[str, tuple[tuple[str, Any], ...]]:
        name = call.name.id
        if name not in PARTITIONS:
            raise SpecError.at(call.name.span, f"unknown feature partition '{name}'",
                               suggest(name, PARTITIONS) or f"use one of {', '.join(PARTITIONS)}")
        args = [("_" + str(i), evaluate(a, self.env)) for i, a in enumerate(call.args)]
        kwargs = [(k.name.id, evaluate(k.value, self.env, symbols=True)) for k in call.kwargs]
        return name, tuple(args + kwargs)

    def region(self, region: ast.Region) -> tuple[Ball, tuple[float, ...] | None, tuple[Box, ...]]:
        """The ball, the radii of a sweep (``linf([0.01, 0.02])``) or None, and the boxes of a box
        region (a ball of unbounded radius around the centre, cut to each box when bound)."""
        calls = (region.norm,) + region.more
        if any(c.name.id == "box" for c in calls):
            return self.boxes(region, calls)
        if region.more:
            raise SpecError.at(region.more[0].span, "a union ('or') is of boxes: within box(...) or box(...)")
        ball, sweep = self.ball(region)
        return ball, sweep, ()

    def boxes(self, region: ast.Region, calls) -> tuple[Ball, None, tuple[Box, ...]]:
        if region.restriction is not None:
            raise SpecError.at(region.restriction.span, "a box region takes no window or feature restriction",
                               "state the box per dimension instead")
        boxes = []
        for k, c in enumerate(calls):
            if c.name.id != "box":
                raise SpecError.at(c.name.span, "a union ('or') is of boxes: within box(...) or box(...)")
            boxes.append(self.box(c, k, len(calls)))
        return Ball("linf", float("inf")), None, tuple(boxes)

    def box(self, c: ast.Call, index: int, of: int) -> Box:
        kw = {k.name.id: k for k in c.kwargs}
        unknown = [k for k in kw if k not in ("lower", "upper", "width")]
        if unknown:
            raise SpecError.at(kw[unknown[0]].span, f"box has no option '{unknown[0]}'",
                               "box(lower, upper), box(\"bounds.npz\") or box(width=w)")
        if "width" in kw:
            if c.args or len(kw) > 1:
                raise SpecError.at(c.span, "box(width=w) takes only the width (the box is the input plus/minus it)")
            width = self.box_bound(kw["width"].value, "width")
            if width.kind != "file" and min(_as_tuple(width.value)) < 0:
                raise SpecError.at(kw["width"].value.span, "a box width must be >= 0")
            return Box(None, None, width, index, of)
        args = list(c.args)
        if len(args) == 1 and not kw and isinstance(args[0], ast.String):  # box("bounds.npz"): keys lower, upper
            path = self.path(args[0])
            return Box(BoxBound("file", path, "lower"), BoxBound("file", path, "upper"), None, index, of)
        lower = args[0] if args else kw.get("lower", None)
        upper = args[1] if len(args) > 1 else kw.get("upper", None)
        lower = lower.value if isinstance(lower, ast.KwArg) else lower
        upper = upper.value if isinstance(upper, ast.KwArg) else upper
        if lower is None or upper is None or len(args) > 2:
            raise SpecError.at(c.span, "a box is box(lower, upper), box(\"bounds.npz\") or box(width=w)")
        lo, hi = self.box_bound(lower, "lower"), self.box_bound(upper, "upper")
        if lo.kind != "file" and hi.kind != "file":
            a, b = _as_tuple(lo.value), _as_tuple(hi.value)
            if len(a) > 1 and len(b) > 1 and len(a) != len(b):
                raise SpecError.at(c.span, f"the lower bound has {len(a)} values but the upper bound has {len(b)}")
            pairs = list(zip(a * len(b) if len(a) == 1 else a, b * len(a) if len(b) == 1 else b))
            bad = next((i for i, (x, y) in enumerate(pairs) if x > y), None)
            if bad is not None:
                raise SpecError.at(c.span, f"empty box: lower {pairs[bad][0]:g} > upper {pairs[bad][1]:g}"
                                           + (f" in dimension {bad}" if len(pairs) > 1 else ""))
        return Box(lo, hi, None, index, of)

    def box_bound(self, node, what: str) -> BoxBound:
        if isinstance(node, ast.String):
            path = self.path(node)
            return BoxBound("file", path, None)
        value = evaluate(node, self.env)
        if _is_num(value):
            return BoxBound("value", float(value))
        if isinstance(value, list) and value and all(_is_num(v) for v in value):
            return BoxBound("list", tuple(float(v) for v in value))
        raise SpecError.at(node.span, f"a box {what} is a number, a list of numbers or an array file (\".npy\")")

    def ball(self, region: ast.Region) -> tuple[Ball, tuple[float, ...] | None]:
        norm = region.norm
        if norm.name.id not in NORMS:
            raise SpecError.at(norm.name.span, f"unknown norm '{norm.name.id}'",
                               suggest(norm.name.id, NORMS) or f"use one of {', '.join(NORMS)}")
        if len(norm.args) != 1 or norm.kwargs:
            raise SpecError.at(norm.span, f"{norm.name.id}(...) takes one radius")
        arg = norm.args[0]
        value = evaluate(arg, self.env)
        if isinstance(value, list):  # a sweep: linf([0.01, 0.02, 0.05])
            if not value or not all(_is_num(v) and v > 0 for v in value):
                raise SpecError.at(arg.span, "a radius sweep is a non-empty list of positive numbers")
            if norm.name.id == "l0" and not all(float(v).is_integer() for v in value):
                raise SpecError.at(arg.span, "l0 radii are counts of dimensions (integers)")
            sweep = tuple(sorted(float(v) for v in value))
            return Ball(norm.name.id, sweep[-1], self._window(region), self._feature(region)), sweep
        if norm.name.id == "l0":
            radius = float(integer(arg, self.env, "an l0 radius (a count of dimensions)"))
        else:
            radius = number(arg, self.env, "the radius")
        if radius <= 0:
            raise SpecError.at(arg.span, "radius must be positive")
        return Ball(norm.name.id, radius, self._window(region), self._feature(region)), None

    def _window(self, region: ast.Region) -> Window | None:
        r = region.restriction
        return None if r is None or r.name.id == "feature" else self.window(r)

    def _feature(self, region: ast.Region):
        r = region.restriction
        if r is None or r.name.id != "feature":
            return None
        name, args = self.partition(r.args[0])
        index = integer(r.args[1], self.env, "a feature index")
        if index < 0:
            raise SpecError.at(r.args[1].span, "a feature index must be >= 0")
        return (name, args, index)

    def window(self, call: ast.Call) -> Window:
        if call.name.id != "window":
            raise SpecError.at(call.name.span, f"unknown restriction '{call.name.id}'",
                               suggest(call.name.id, ["window"]) or
                               "use window(row, col, height, width) or feature(grid(2, 2), 0)")
        if len(call.args) != 4 or call.kwargs:
            raise SpecError.at(call.span, "window takes (row, col, height, width)")
        row, col, h, w = (integer(a, self.env, "a window coordinate") for a in call.args)
        if min(row, col) < 0 or min(h, w) < 1:
            raise SpecError.at(call.span, "a window needs row, col >= 0 and height, width >= 1")
        return Window(row, col, h, w)

    def requirement(self, req: ast.Requirement) -> Requirement:
        if req.kind != "bound":
            return Requirement(req.kind, None, None, None, req.span)
        if req.bound.id not in BOUNDS:
            raise SpecError.at(req.bound.span, f"unknown bound '{req.bound.id}'",
                               suggest(req.bound.id, BOUNDS) or "use estimate, lower or upper")
        value = number(req.value, self.env, "a required radius")
        if value < 0:
            raise SpecError.at(req.value.span, "a required radius must be >= 0")
        return Requirement("bound", req.bound.id, req.cmp, value, req.span)

    def solver(self, call: ast.Call) -> SolverChoice:
        info = registry.info(call.name.id)
        if info is None:
            known = registry.names() + ["game"]
            raise SpecError.at(call.name.span, f"unknown solver '{call.name.id}'",
                               suggest(call.name.id, known) or f"available: {', '.join(registry.names())}")
        if call.args:
            raise SpecError.at(call.args[0].span, "solver options are named: mads(budget=1000)")
        options: list[tuple[str, Any]] = []
        for kw in call.kwargs:
            spec = info.option(kw.name.id)
            if spec is None:
                self.errors.add(kw.name.span, f"solver '{info.name}' has no option '{kw.name.id}'",
                                suggest(kw.name.id, [o.name for o in info.options]))
                continue
            with self.errors.attempt():
                value = evaluate(kw.value, self.env, symbols=spec.type in (str, bool))
                try:
                    options.append((spec.name, coerce(spec, str(value) if isinstance(value, Symbol) else value)))
                except ValueError as err:
                    raise SpecError.at(kw.value.span, str(err)) from None
        return SolverChoice(info.name, tuple(options), call.span, explicit=True)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _kind_name(cond: ast.Condition) -> str:
    return {ast.Robustness: "robustness", ast.Uncertainty: "uncertainty",
            ast.Reachability: "reachability", ast.ReachRange: "range", ast.MaxRadius: "max_radius",
            ast.FeatureRobustness: "feature_robustness", ast.FormulaCond: "formula"}[type(cond)]


def _as_tuple(v) -> tuple[float, ...]:
    return v if isinstance(v, tuple) else (v,)
