"""The converted model's torch.fx graph, seen by the bound engine: one ``Op`` per fx node that
depends on the input, each tagged with the rule that bounds it.

No second model IR: the ops call the fx graph's own submodules and functions (copied to float64),
constants (initializers, folded subgraphs that do not depend on the input) are evaluated once, and
every op keeps the fx node's name so that notes point at the graph. The kinds:

- ``input``: the network's input (after the spec's normalisation, itself an affine op);
- ``affine``: affine in its non-constant arguments (Linear, Conv, ConvTranspose, BatchNorm in eval mode, MatMul,
  Gemm, Add/Sub/Mul/Div with constants, residual Add/Sub of two branches, Flatten, Reshape,
  Transpose, Concat, Pad, Squeeze/Unsqueeze, Slice, average pooling, ReduceMean/ReduceSum, Neg,
  Identity, Dropout). Its linear
  part is applied backwards by autograd (a vector-Jacobian product), so any padding, stride or
  grouping is handled exactly; its interval rule is ``monotone`` (every coefficient >= 0, or
  <= 0, per argument) or ``signed`` (centre and radius with absolute weights);
- ``relu``, ``leaky_relu``, ``sigmoid``, ``tanh``, ``sign``, ``softplus``, ``elu`` (alpha <= 1), ``gelu``, ``silu``, ``erf``:
  elementwise, with linear relaxations;
- ``maxpool``: an interval rule; backward passes concretise at its output.

Clips (ONNX's Clip, ReLU6, Hardtanh, ``torch.clamp`` with constant ends) become the ReLU ops of
a + relu(x - a) - relu(x - b); a softmax that ends the graph is left out on request
(``before_softmax``), for properties read through it; a property's own ops (``head``) may follow.

An operator outside these gives ``Unsupported`` naming it and its node; callers turn that into a
note ("no bound for GELU at node N") and no bound, never a crash or an unsound number.
"""

from __future__ import annotations

import copy
import math
import operator
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import fx, nn


class Unsupported(ValueError):
    """The graph has a node the bound engine has no sound rule for."""


@dataclass
class Op:
    name: str
    kind: str  # input | affine | relu | leaky_relu | sigmoid | tanh | sign | erf | softplus | elu | gelu | silu | exp | maxpool
    inputs: tuple[str, ...]  # the non-constant arguments, in the order ``fn`` takes them
    fn: Callable[..., torch.Tensor]  # float64, batched: fn(*inputs) -> output
    shape: tuple[int, ...] = ()  # output shape without the batch dimension
    signs: tuple[int, ...] = ()  # affine, monotone: +1 / -1 per input; empty: signed
    abs_fn: Callable[..., torch.Tensor] | None = None  # affine, signed: the linear part with |weights|
    slope: float = 0.0  # leaky_relu's negative slope; elu's alpha
    bias: torch.Tensor | None = None  # affine: fn(0, ..., 0), shape (1, *shape)
    matrix: torch.Tensor | None = None  # affine on flat vectors, y = x @ matrix.T + bias: a fast backward path
    # fast backward paths: "shift" (y = sign * x + constant, same shape), "reshape" (the same
    # elements in the same order, another shape); "" : through autograd
    back: str = ""
    users: list[str] = field(default_factory=list)
    # the last op of a decomposed max-pool or clip: the monotone original op and its input, whose
    # interval bounds (the max of the window's; the clipped interval) the engine intersects with the
    # decomposition's
    pool: Callable[..., torch.Tensor] | None = None
    pool_input: str = ""
    # a convolution with numeric padding (back == "conv"): its kernel and keywords, for a direct
    # transposed convolution in the backward pass (autograd's would also run the forward)
    kernel: torch.Tensor | None = None
    conv: dict = field(default_factory=dict)


_MONOTONE_MODULES = (nn.Flatten, nn.Identity, nn.Dropout, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
                     nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.Unflatten)
_RESHAPING_ONNX = ("OnnxReshape", "OnnxFlatten", "OnnxSqueezeStaticAxes", "OnnxUnsqueezeStaticAxes",
                   "OnnxSqueezeDynamicAxes", "OnnxUnsqueezeDynamicAxes", "OnnxCopyIdentity", "OnnxDropoutDynamic")
_MONOTONE_ONNX = _RESHAPING_ONNX + ("OnnxTranspose", "OnnxConcat", "OnnxPadStatic", "OnnxPadDynamic", "OnnxSlice",
                                    "OnnxReduceSumStaticAxes", "OnnxGlobalAveragePool",
                                    "OnnxGlobalAveragePoolWithKnownInputShape")
_AVERAGING_REDUCTIONS = ("ReduceMean", "ReduceSum")  # OnnxReduceStaticAxes: linear, coefficients >= 0
_MONOTONE_FUNCTIONS = (torch.flatten, torch.reshape, torch.cat, torch.concat, torch.permute, torch.transpose,
                       torch.squeeze, torch.unsqueeze, F.pad, F.avg_pool2d, F.avg_pool1d, operator.getitem)
_MONOTONE_METHODS = ("view", "reshape", "flatten", "permute", "transpose", "squeeze", "unsqueeze", "contiguous",
                     "__getitem__")


class BoundGraph:
    """The ops of a module's graph in topological order, ending in ``output``."""

    def __init__(self, ops: list[Op], output: str, input_shape: tuple[int, ...]):
        self.ops = ops
        self.by_name = {op.name: op for op in ops}
        self.output = output
        self.input_shape = input_shape
        self.stripped_softmax = False  # (from_module(before_softmax=True): the graph gives the logits)
        for op in ops:
            for i in op.inputs:
                self.by_name[i].users.append(op.name)
        self.index = {op.name: k for k, op in enumerate(ops)}
        self.source_ops = ops  # before max-pools were decomposed (see _decompose_maxpools)

    @property
    def output_size(self) -> int:
        n = 1
        for d in self.by_name[self.output].shape:
            n *= d
        return n

    @classmethod
    def from_module(cls, module: nn.Module, input_shape: tuple[int, ...], scale=None, shift=None,
                    decompose: bool = True, before_softmax: bool = False,
                    head: nn.Module | None = None) -> "BoundGraph":
        """Build from a (converted) module; ``scale``/``shift``: the normalisation x * scale + shift
        applied before it; ``decompose``: small max-pools as exact ReLU networks (for linear
        relaxations); ``before_softmax``: a softmax over the outputs that ends the graph is left
        out, so that the graph gives the logits (``stripped_softmax`` says whether there was one;
        for properties read through it); ``head``: a module applied to the output (the logits, with
        ``before_softmax``), whose ops join the graph (``bounds.softmax.ExpHead``). Raises
        ``Unsupported`` for a graph it cannot bound."""
        gm = _graph_module(module)
        # the engine works on a float64 copy on the CPU, whatever device the model runs on (bounds on
        # a GPU are not implemented yet)
        gm = copy.deepcopy(gm).to(device="cpu", dtype=torch.float64).eval()
        ops: list[Op] = [Op("input", "input", (), lambda x: x)]
        env: dict[fx.Node, Any] = {}  # node -> op name (str wrapped in _Ref) or a constant
        stripped = False
        current = "input"
        if scale is not None:
            s = torch.as_tensor(scale, dtype=torch.float64).cpu()
            b = torch.as_tensor(shift, dtype=torch.float64).cpu()
            ops.append(Op("normalize", "affine", ("input",), lambda x, s=s, b=b: x * s + b,
                          abs_fn=lambda r, s=s: r * s.abs()))
            current = "normalize"
        output = None
        parts = [(gm, before_softmax)]
        if head is not None:  # a property's own ops after the graph's output (``bounds.softmax``)
            parts.append((fx.symbolic_trace(copy.deepcopy(head).to(dtype=torch.float64)), False))
        for k, (gm, strip) in enumerate(parts):
            if k:  # the head reads the graph's output; its op names are kept apart
                current, output = output, None
                for node in gm.graph.nodes:
                    node.name = f"head/{node.name}"
            for node in gm.graph.nodes:
                if node.op == "placeholder":
                    if any(isinstance(v, _Ref) for v in env.values()) and not k:
                        raise Unsupported("a graph with several inputs")
                    env[node] = _Ref(current)
                elif node.op == "get_attr":  # (integer constants, such as a Reshape's shape, stay integers)
                    value = _fetch(gm, node.target)
                    env[node] = value.detach().to(torch.float64) if isinstance(value, torch.Tensor) and \
                        value.is_floating_point() else value
                elif node.op == "output":
                    out = node.args[0]
                    out = out[0] if isinstance(out, (tuple, list)) else out
                    value = env[out]
                    if not isinstance(value, _Ref):
                        raise Unsupported("the output does not depend on the input")
                    output = value.name
                else:
                    stripped = _visit(gm, node, env, ops, strip, head=bool(k)) or stripped
        if output is None:
            raise Unsupported("the graph has no output")
        ops = _live(ops, output)
        graph = cls(ops, output, tuple(input_shape))
        graph.stripped_softmax = stripped
        graph._infer_shapes()
        if stripped and len(graph.by_name[output].shape) != 1:
            raise Unsupported("a softmax over part of an output that is not a vector")
        if decompose and any(_decomposable(op, graph.by_name) for op in ops):  # exact as ReLUs: linear relaxations, not intervals
            graph = cls(_decompose_maxpools(ops, graph.by_name), output, tuple(input_shape))
            graph.stripped_softmax = stripped
            graph._infer_shapes()
            graph.source_ops = ops
        return graph

    def _infer_shapes(self) -> None:
        values: dict[str, torch.Tensor] = {}
        x = torch.zeros((1,) + self.input_shape, dtype=torch.float64)
        with torch.no_grad():
            for op in self.ops:
                out = x if op.kind == "input" else op.fn(*(values[i] for i in op.inputs))
                if not isinstance(out, torch.Tensor):
                    raise Unsupported(f"node {op.name} does not give a tensor")
                values[op.name] = out
                op.shape = tuple(out.shape[1:])
                if op.kind == "affine":
                    op.bias = out.detach() if len(op.inputs) == 1 and op.inputs[0] == "input" else \
                        op.fn(*(torch.zeros_like(values[i]) for i in op.inputs)).detach()
        # a second probe with batch 3: every op must keep the batch dimension apart
        x3 = torch.rand((3,) + self.input_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        values = {}
        with torch.no_grad():
            for op in self.ops:
                out = x3 if op.kind == "input" else op.fn(*(values[i] for i in op.inputs))
                if out.shape[0] != 3 or tuple(out.shape[1:]) != op.shape:
                    raise Unsupported(f"node {op.name} mixes the batch dimension (shape {tuple(out.shape)})")
                values[op.name] = out


def _visit(gm: fx.GraphModule, node: fx.Node, env: dict, ops: list[Op], strip: bool, head: bool = False) -> bool:
    """Append the ops of one fx node that is not a placeholder, constant or output (a constant
    subgraph is folded instead); ``strip``: a final softmax is left out (the return value says
    whether this node was one); ``head``: the node is a property head's, where exp has a rule
    (the head caps its input; a model's exp could overflow, and has none)."""
    args = fx.node.map_arg(node.args, lambda n: env[n])
    kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n])
    refs = _refs(args, kwargs)
    call = _callable(gm, node)
    if not refs:  # a constant subgraph: fold it
        env[node] = call(*args, **kwargs)
        return False
    if strip and _final_softmax(gm, node, args):
        env[node] = args[0]  # the logits
        return True
    clip = _clip_range(gm, node, args, kwargs, refs)
    if clip is not None:  # as ReLUs: min(max(x, a), b) = a + relu(x - a) - relu(x - b)
        ops.extend(_clip_ops(node.name, refs[0], *clip))
        env[node] = _Ref(node.name)
        return False
    swish = _swish_input(gm, node, args, ops)
    if swish is not None:  # x * sigmoid(x), as ONNX has SiLU: one op
        ops.append(Op(node.name, "silu", (swish,), F.silu))
        env[node] = _Ref(node.name)
        return False
    erf_gelu = _erf_gelu_input(gm, node, args, ops)
    if erf_gelu is not None:  # x * (1 + erf(x / sqrt 2)), as ONNX has GELU before opset 20: 2 GELU(x)
        ops += [Op(f"{node.name}/gelu", "gelu", (erf_gelu,), F.gelu),
                Op(node.name, "affine", (f"{node.name}/gelu",), lambda g: 2 * g, abs_fn=lambda r: 2 * r)]
        env[node] = _Ref(node.name)
        return False
    if head and node.op == "call_function" and node.target is torch.exp:
        ops.append(Op(node.name, "exp", tuple(refs), _bind(call, args, kwargs, refs)))
        env[node] = _Ref(node.name)
        return False
    leaky = _leaky_ops(gm, node, args, kwargs, refs)
    if leaky is not None:  # PReLU, or a leaky ReLU sloped outside [0, 1]: one ReLU and an affine op
        ops.extend(leaky)
        env[node] = _Ref(node.name)
        return False
    op = _classify(gm, node, call, args, kwargs, refs)
    ops.append(op)
    env[node] = _Ref(op.name)
    return False


DECOMPOSE_LIMIT = 4096  # max-pool inputs (elements) up to which the engine decomposes it (CROWN's default scale)


def pool_windows(op: Op, in_shape: tuple) -> list[list[int]]:
    """Per output of a max-pool, the flat inputs of its window: probed with unit inputs, a chunk
    at a time (an input belongs to the windows whose output it alone sets to 1), so any kernel,
    stride, padding, dilation or ceil mode works."""
    n, n_out = math.prod(in_shape), math.prod(op.shape)
    chunk = max(1, min(n, 2**22 // max(n_out, n)))  # 32 MB of float64 per probe
    pairs = []
    with torch.no_grad():
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            basis = torch.zeros((m, n), dtype=torch.float64)
            basis[torch.arange(m), torch.arange(start, start + m)] = 1.0
            hit = (op.fn(basis.reshape((m,) + in_shape)).reshape(m, -1) > 0.5).nonzero()
            hit[:, 0] += start
            pairs.append(hit)
    pairs = torch.cat(pairs)
    pairs = pairs[torch.argsort(pairs[:, 1] * n + pairs[:, 0])]  # by output, then input
    counts = torch.bincount(pairs[:, 1], minlength=n_out).tolist()
    inputs = pairs[:, 0].tolist()
    out, at = [], 0
    for c in counts:
        out.append(inputs[at:at + c])
        at += c
    return out


def _decomposable(op: Op, by_name: dict[str, Op]) -> bool:
    return op.kind == "maxpool" and len(op.inputs) == 1 and math.prod(by_name[op.inputs[0]].shape) <= DECOMPOSE_LIMIT


def _decompose_maxpools(ops: list[Op], by_name: dict[str, Op]) -> list[Op]:
    """Every max-pool as the exact ReLU network max(a, b) = b + relu(a - b), a tournament of pairs
    per output window (``pool_windows``): per level an affine op (the pairs' differences), a ReLU, and a monotone
    op (each pair's b plus its ReLU; an odd candidate carried), the last named like the max-pool
    and shaped like its output. Bounds then relax the max-pool like any ReLU (CROWN, alpha,
    splits) instead of concretising intervals at its output (on the demo CNN, branch and bound
    certified about twice the radius). Max-pools over more than DECOMPOSE_LIMIT elements stay
    interval-only (cheaper to build; such networks get IBP by default, and IBP through the
    decomposition is looser than the max of the intervals)."""
    out: list[Op] = []
    for op in ops:
        if not _decomposable(op, by_name):
            out.append(replace(op, users=[]))  # users: the new graph fills them in
            continue
        src, in_shape, out_shape = op.inputs[0], tuple(by_name[op.inputs[0]].shape), tuple(op.shape)
        cands = pool_windows(op, in_shape)
        if any(not c for c in cands):
            raise Unsupported(f"max-pool {op.name} has an output with no input")
        cur, level = src, 0
        while True:
            ia, ib, sel, rsel, nxt = [], [], [], [], []
            for c in cands:
                mine = []
                for k in range(0, len(c) - 1, 2):
                    mine.append(len(sel))
                    sel.append(c[k + 1])
                    rsel.append(len(ia))
                    ia.append(c[k])
                    ib.append(c[k + 1])
                if len(c) % 2:
                    mine.append(len(sel))
                    sel.append(c[-1])
                    rsel.append(-1)  # no ReLU term
                nxt.append(mine)
            sel_t = torch.tensor(sel)
            if not ia:  # windows of one element (no pairs at the first level): a selection
                out.append(Op(op.name, "affine", (cur,), lambda x, i=sel_t, s=out_shape: x.flatten(1)[:, i].reshape((-1,) + s),
                              signs=(1,), pool=op.fn, pool_input=src))
                break
            ia_t, ib_t = torch.tensor(ia), torch.tensor(ib)
            diff, relu = f"{op.name}/diff{level}", f"{op.name}/relu{level}"
            out.append(Op(diff, "affine", (cur,), lambda x, a=ia_t, b=ib_t: x.flatten(1)[:, a] - x.flatten(1)[:, b],
                          abs_fn=lambda r, a=ia_t, b=ib_t: r.flatten(1)[:, a] + r.flatten(1)[:, b]))
            out.append(Op(relu, "relu", (diff,), torch.relu))
            has = torch.tensor([r >= 0 for r in rsel])
            r_t = torch.tensor([max(r, 0) for r in rsel])
            final = all(len(m) == 1 for m in nxt)
            name = op.name if final else f"{op.name}/max{level}"
            shape = out_shape if final else (len(sel),)

            def pick(x, r, i=sel_t, j=r_t, h=has, s=shape):
                return (x.flatten(1)[:, i] + torch.where(h, r.flatten(1)[:, j], 0.0)).reshape((-1,) + s)

            out.append(Op(name, "affine", (cur, relu), pick, signs=(1, 1), pool=op.fn if final else None,
                          pool_input=src if final else ""))
            if final:
                break
            cands, cur, level = nxt, name, level + 1
    return out


class _Ref:
    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name


def _graph_module(module: nn.Module) -> fx.GraphModule:
    inner = module
    for _ in range(4):  # nnspec's loading wrappers
        kind = type(inner).__name__
        if kind == "_Unbatched":
            inner = inner.inner
        elif kind in ("_VMapped", "_PerInputLoop"):
            raise Unsupported("the graph does not take a batch dimension (evaluated per input)")
        else:
            break
    if isinstance(inner, fx.GraphModule):
        return inner
    if isinstance(inner, torch.jit.ScriptModule):
        raise Unsupported("a TorchScript archive has no graph the bound engine reads")
    try:
        return fx.symbolic_trace(inner)
    except Exception as err:
        detail = (str(err).strip().splitlines() or [""])[0][:160]
        raise Unsupported(f"the module cannot be traced ({type(err).__name__}"
                          f"{': ' + detail if detail else ''})") from None


def _fetch(gm: nn.Module, target: str):
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _refs(args, kwargs) -> list[str]:
    found: list[str] = []

    def visit(v):
        if isinstance(v, _Ref):
            found.append(v.name)
        elif isinstance(v, (list, tuple)):
            for item in v:
                visit(item)
        elif isinstance(v, dict):
            for item in v.values():
                visit(item)
    visit(args)
    visit(kwargs)
    return found


def _callable(gm: fx.GraphModule, node: fx.Node) -> Callable:
    if node.op == "call_module":
        return gm.get_submodule(node.target)
    if node.op == "call_function":
        return node.target
    if node.op == "call_method":
        return lambda obj, *a, **k: getattr(obj, node.target)(*a, **k)
    raise Unsupported(f"node {node.name} ({node.op})")


def _bind(call: Callable, args, kwargs, refs: list[str]) -> Callable:
    """fn(*tensors) calling ``call`` with the references replaced, in order, by the tensors."""
    def fn(*tensors):
        it = iter(tensors)

        def sub(v):
            if isinstance(v, _Ref):
                return next(it)
            if isinstance(v, (list, tuple)):
                return type(v)(sub(i) for i in v)
            if isinstance(v, dict):
                return {k: sub(i) for k, i in v.items()}
            return v
        a, k = sub(args), sub(kwargs)
        return call(*a, **k)
    return fn


def _clip_range(gm: fx.GraphModule, node: fx.Node, args, kwargs, refs) -> tuple | None:
    """(a, b) for an elementwise clip of one input to [a, b] with constant ends (either may be
    None: one-sided): nn.ReLU6, nn.Hardtanh, onnx2torch's OnnxClip (ONNX Clip), torch.clamp."""
    if len(refs) != 1:
        return None
    module = gm.get_submodule(node.target) if node.op == "call_module" else None
    if isinstance(module, nn.ReLU6):
        return 0.0, 6.0
    if isinstance(module, nn.Hardtanh):
        return float(module.min_val), float(module.max_val)
    if type(module).__name__ == "OnnxClip":
        ends = (module.min_val, module.max_val)
    elif node.op == "call_function" and node.target in (torch.clamp, torch.clip) or (
            node.op == "call_method" and node.target in ("clamp", "clip")):
        rest = list(args[1:]) + [None] * 2
        ends = (kwargs.get("min", rest[0]), kwargs.get("max", rest[1]))
    else:
        return None
    if any(e is not None and not isinstance(e, (int, float)) for e in ends) or ends == (None, None):
        return None
    a, b = (None if e is None else float(e) for e in ends)
    return None if a is not None and b is not None and a > b else (a, b)


def _clip_ops(name: str, source: str, a: float | None, b: float | None) -> list[Op]:
    """A clip to [a, b] as exact ReLU ops (the last one named ``name``): a + relu(x - a) - relu(x - b),
    or one of its one-sided forms, with the clip itself as the monotone interval the engine
    intersects the result with (as for decomposed max-pools)."""
    ops, relus = [], []
    for end, tag in ((a, "min"), (b, "max")):
        if end is not None:
            ops += [Op(f"{name}/{tag}_shift", "affine", (source,), lambda x, e=end: x - e, signs=(1,), back="shift"),
                    Op(f"{name}/{tag}_relu", "relu", (f"{name}/{tag}_shift",), torch.relu)]
            relus.append(f"{name}/{tag}_relu")

    def clamp(x, a=a, b=b):
        return torch.clamp(x, a, b)
    if a is not None and b is not None:
        last = Op(name, "affine", tuple(relus), lambda p, q, a=a: p - q + a, signs=(1, -1))
    elif a is not None:
        last = Op(name, "affine", tuple(relus), lambda p, a=a: p + a, signs=(1,), back="shift")
    else:
        last = Op(name, "affine", (source, relus[0]), lambda x, q: x - q, signs=(1, -1))
    last.pool, last.pool_input = clamp, source
    return ops + [last]


def _live(ops: list[Op], output: str) -> list[Op]:
    """The ops the output depends on (through their inputs and the intervals they intersect
    with), in order: a pattern read as one op (SiLU's sigmoid, GELU's erf) leaves the ops it
    replaced with no reader, and bounding them would cost passes for nothing."""
    by_name = {op.name: op for op in ops}
    needed, todo = {"input", output}, [output]
    while todo:
        op = by_name[todo.pop()]
        for name in op.inputs + ((op.pool_input,) if op.pool_input else ()):
            if name not in needed:
                needed.add(name)
                todo.append(name)
    return [op for op in ops if op.name in needed]


def _producer(ops: list[Op], name: str) -> Op | None:
    """The op named ``name`` among those built so far (patterns look a few ops back)."""
    return next((o for o in reversed(ops) if o.name == name), None)


def _is_mul(gm: fx.GraphModule, node: fx.Node) -> bool:
    module = gm.get_submodule(node.target) if node.op == "call_module" else None
    if module is not None:
        return getattr(module, "math_op_function", None) is torch.mul
    return node.op == "call_function" and node.target in (operator.mul, torch.mul)


def _erf_gelu_input(gm: fx.GraphModule, node: fx.Node, args, ops: list[Op]) -> str | None:
    """The op x of a product x * (1 + erf(x c)) with c = 1 / sqrt(2) to float32's precision (x / c
    or x * c before the erf), either order: twice GELU(x), as exports before opset 20 write
    GELU (a Mul by 0.5 follows); or None. The float32 constant's rounding (1e-8 relative) is of
    the order of the model's own float32 arithmetic, which the proofs' guard covers."""
    if len(args) != 2 or not all(isinstance(a, _Ref) for a in args) or not _is_mul(gm, node):
        return None
    one = torch.ones(1, dtype=torch.float64)
    for x, y in ((args[0].name, args[1].name), (args[1].name, args[0].name)):
        plus = _producer(ops, y)
        if plus is None or plus.kind != "affine" or plus.back != "shift" or plus.signs != (1,):
            continue
        erf = _producer(ops, plus.inputs[0])
        if erf is None or erf.kind != "erf":
            continue
        scale = _producer(ops, erf.inputs[0])
        if scale is None or scale.kind != "affine" or scale.inputs != (x,):
            continue
        try:
            with torch.no_grad():
                shift = float(plus.fn(0 * one)[0])
                c, offset = float(scale.fn(one)[0] - scale.fn(0 * one)[0]), float(scale.fn(0 * one)[0])
        except (RuntimeError, TypeError, IndexError):  # pragma: no cover - a shape the probe does not fit
            continue
        if shift == 1.0 and offset == 0.0 and abs(c - 1 / math.sqrt(2)) <= 1e-7:
            return x
    return None


def _swish_input(gm: fx.GraphModule, node: fx.Node, args, ops: list[Op]) -> str | None:
    """The op x of a product x * sigmoid(x) or sigmoid(x) * x (SiLU, as an ONNX export writes it),
    or None."""
    if len(args) != 2 or not all(isinstance(a, _Ref) for a in args) or not _is_mul(gm, node):
        return None
    for x, s in ((args[0].name, args[1].name), (args[1].name, args[0].name)):
        op = _producer(ops, s)
        if op is not None and op.kind == "sigmoid" and op.inputs == (x,):
            return x
    return None


def _leaky_ops(gm: fx.GraphModule, node: fx.Node, args, kwargs, refs) -> list[Op] | None:
    """A PReLU (slopes per channel or element: nn.PReLU, F.prelu, onnx2torch's OnnxPReLU with
    constant slopes) or a leaky ReLU whose slope is outside [0, 1] as exact ops over ReLUs (the
    last one named as the node), or None for other nodes and for leaky ReLUs sloped within [0, 1]
    (``leaky_relu`` ops of their own). With slopes s, f(x) = s x + (1 - s) relu(x) for any s: one
    ReLU, and the relaxation of a leaky ReLU where 0 <= s <= 1 (an affine op's coefficients must
    keep one sign per input, so s within [0, 1], or all >= 1, or all <= 0); slopes >= 0 on both
    sides of 1, f(x) = relu(x) - s relu(-x) (two ReLUs). Slopes >= 0 make f nondecreasing: its
    interval [f(l), f(u)] is intersected with the decomposition's, as for clips. Slopes of both
    signs: Unsupported."""
    if len(refs) != 1 or not isinstance(args[0], _Ref):
        return None
    module = gm.get_submodule(node.target) if node.op == "call_module" else None
    what = _name(gm, node)
    if isinstance(module, nn.PReLU):
        slopes = module.weight.detach().to(torch.float64)
        original = module
    elif type(module).__name__ == "OnnxPReLU" and len(args) == 2 and isinstance(args[1], torch.Tensor):
        slopes = args[1]

        def original(x, module=module, slopes=slopes):
            return module(x, slopes.to(x.dtype))
    elif node.op == "call_function" and node.target is F.prelu and len(args) == 2 and \
            isinstance(args[1], torch.Tensor):
        slopes = args[1]

        def original(x, slopes=slopes):
            return F.prelu(x, slopes.to(x.dtype))
    elif isinstance(module, nn.LeakyReLU) or (node.op == "call_function" and node.target is F.leaky_relu):
        slope = float(module.negative_slope if module is not None else
                      kwargs.get("negative_slope", args[1] if len(args) > 1 else 0.01))
        if 0 <= slope <= 1:
            return None
        slopes = torch.tensor(slope, dtype=torch.float64)

        def original(x, slope=slope):
            return F.leaky_relu(x, slope)
    else:
        return None
    least, most = float(slopes.min()), float(slopes.max())
    if least < 0 < most:
        raise Unsupported(f"no bound for {what} with slopes of both signs ({least:g} to {most:g}) at node {node.name}")
    source, name = args[0].name, node.name

    def slope_of(x):  # the slopes as the node applies them, in x's shape: f(-1) = -s
        return -original(-torch.ones_like(x))
    relu = Op(f"{name}/relu", "relu", (source,), torch.relu)
    if least >= 0 and most > 1 and least < 1:  # relu(x) - s relu(-x)
        neg = Op(f"{name}/neg", "affine", (source,), lambda x: -x, signs=(-1,), back="shift")
        neg_relu = Op(f"{name}/neg_relu", "relu", (neg.name,), torch.relu)
        last = Op(name, "affine", (relu.name, neg_relu.name), lambda p, q: p - slope_of(p) * q, signs=(1, -1))
        ops = [relu, neg, neg_relu]
    else:  # s x + (1 - s) relu(x)
        signs = (1, 1) if least >= 0 and most <= 1 else (1, -1) if least >= 1 else (-1, 1)
        last = Op(name, "affine", (source, relu.name), lambda x, r: slope_of(x) * x + (1 - slope_of(x)) * r,
                  signs=signs)
        ops = [relu]
    if least >= 0:  # nondecreasing
        last.pool, last.pool_input = original, source
    return ops + [last]


def _final_softmax(gm: fx.GraphModule, node: fx.Node, args) -> bool:
    """Whether the node is a softmax over the last dimension of a (batch, outputs) tensor whose only
    use is the graph's output."""
    users = list(node.users)
    if len(users) != 1 or users[0].op != "output" or not args or not isinstance(args[0], _Ref):
        return False
    module = gm.get_submodule(node.target) if node.op == "call_module" else None
    if isinstance(module, nn.Softmax):
        dim = module.dim
    elif type(module).__name__ == "OnnxSoftmaxV1V11":
        dim = None if getattr(module, "is_log", False) else getattr(module, "axis", None)
    elif node.op == "call_function" and node.target in (torch.softmax, F.softmax):
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
    else:
        return False
    return dim in (-1, 1)


def _name(gm: fx.GraphModule, node: fx.Node) -> str:
    if node.op == "call_module":
        return type(gm.get_submodule(node.target)).__name__
    return getattr(node.target, "__name__", str(node.target))


def _classify(gm: fx.GraphModule, node: fx.Node, call, args, kwargs, refs: list[str]) -> Op:
    fn = _bind(call, args, kwargs, refs)
    name = node.name
    what = _name(gm, node)
    module = gm.get_submodule(node.target) if node.op == "call_module" else None
    target = node.target
    one = len(refs) == 1

    def affine(signs=(), abs_fn=None):
        return Op(name, "affine", tuple(refs), fn, signs=tuple(signs), abs_fn=abs_fn)

    # ---- elementwise nonlinearities
    if isinstance(module, nn.ReLU) or target in (torch.relu, F.relu) or (node.op == "call_method" and target == "relu"):
        return Op(name, "relu", tuple(refs), fn)
    if isinstance(module, nn.LeakyReLU) or target is F.leaky_relu:
        slope = module.negative_slope if module is not None else float(kwargs.get("negative_slope", 0.01))
        return Op(name, "leaky_relu", tuple(refs), fn, slope=float(slope))
    if isinstance(module, nn.Sigmoid) or target in (torch.sigmoid, F.sigmoid):
        return Op(name, "sigmoid", tuple(refs), fn)
    # (onnx2torch converts ONNX's Tanh and Sign to an OnnxFunction module that calls the function)
    function = getattr(module, "function", None) if what == "OnnxFunction" else None
    if isinstance(module, nn.Tanh) or target in (torch.tanh, F.tanh) or function is torch.tanh:
        return Op(name, "tanh", tuple(refs), fn)
    if what == "OnnxErf" or target is torch.erf or function is torch.erf:  # nondecreasing, tanh-shaped
        return Op(name, "erf", tuple(refs), fn)
    if function is torch.sign or target is torch.sign:
        return Op(name, "sign", tuple(refs), fn)
    if isinstance(module, nn.Softplus) or target is F.softplus:  # convex: chord above, tangent below
        beta = module.beta if module is not None else kwargs.get("beta", 1.0)
        if beta != 1:
            raise Unsupported(f"no bound for {what} with beta {beta} at node {name}")
        return Op(name, "softplus", tuple(refs), fn)
    if isinstance(module, nn.SiLU) or target is F.silu:  # x sigmoid(x): not monotone, not convex
        return Op(name, "silu", tuple(refs), fn)
    if isinstance(module, nn.GELU) or target is F.gelu:  # x Phi(x): not monotone, not convex
        approximate = module.approximate if module is not None else kwargs.get("approximate", "none")
        if approximate != "none":
            raise Unsupported(f"no bound for {what} with approximate={approximate!r} at node {name}")
        return Op(name, "gelu", tuple(refs), fn)
    if isinstance(module, nn.ELU) or target is F.elu:
        alpha = float(module.alpha if module is not None else kwargs.get("alpha", 1.0))
        if not 0 <= alpha <= 1:  # (above 1 the kink at 0 is concave)
            raise Unsupported(f"no bound for {what} with alpha {alpha:g} at node {name}")
        return Op(name, "elu", tuple(refs), fn, slope=alpha)
    if isinstance(module, (nn.MaxPool1d, nn.MaxPool2d)) or target in (F.max_pool2d, F.max_pool1d):
        return Op(name, "maxpool", tuple(refs), fn)
    if what == "OnnxMaxPool":  # pragma: no cover - some onnx2torch versions
        return Op(name, "maxpool", tuple(refs), fn)

    # ---- affine operators with signed coefficients
    # nn.Linear, or F.linear(x, w, b) in a forward (a bare nn.Linear traced as the root module too)
    if one and (isinstance(module, nn.Linear) or (
            target is F.linear and isinstance(args[0], _Ref) and isinstance(args[1], torch.Tensor))):
        w = (module.weight if module is not None else args[1]).detach()
        op = affine(abs_fn=lambda r, w=w: F.linear(r, w.abs()))
        op.matrix = w
        return op
    if target in (F.conv1d, F.conv2d, F.conv3d) and one and isinstance(args[0], _Ref) and \
            isinstance(args[1], torch.Tensor):  # a convolution called in a forward
        a, k = list(args), dict(kwargs)
        a[1] = args[1].detach().abs()
        if len(a) > 2:
            a[2] = None
        k.pop("bias", None)
        op = affine(abs_fn=_bind(call, tuple(a), k, refs))
        names = ("stride", "padding", "dilation", "groups")
        given = dict(zip(names, args[3:])) | {n: kwargs[n] for n in names if n in kwargs}
        return _with_conv(op, args[1].detach(), given, {F.conv1d: 1, F.conv2d: 2, F.conv3d: 3}[target])
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and one:
        if module.padding_mode != "zeros":
            raise Unsupported(f"no bound for {what} with padding mode {module.padding_mode} at node {name}")
        conv = copy.deepcopy(module)
        conv.weight = nn.Parameter(module.weight.detach().abs(), requires_grad=False)
        conv.bias = None
        given = {"stride": module.stride, "padding": module.padding, "dilation": module.dilation,
                 "groups": module.groups}
        return _with_conv(affine(abs_fn=conv), module.weight.detach(), given, module.weight.dim() - 2)
    if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)) and one:
        # affine: intervals by centre and radius (the radius through |W|), the backward pass by
        # autograd's vector-Jacobian product (a convolution)
        if module.padding_mode != "zeros":  # pragma: no cover - torch allows only zeros here
            raise Unsupported(f"no bound for {what} with padding mode {module.padding_mode} at node {name}")
        conv = copy.deepcopy(module)
        conv.weight = nn.Parameter(module.weight.detach().abs(), requires_grad=False)
        conv.bias = None
        return affine(abs_fn=conv)
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)) and one:
        scale = (module.weight if module.affine else torch.ones_like(module.running_var)) / torch.sqrt(
            module.running_var + module.eps)

        def bn_abs(r, scale=scale.detach()):
            return r * scale.abs().view((1, -1) + (1,) * (r.dim() - 2))
        return affine(abs_fn=bn_abs)
    if what == "OnnxBinaryMathOperation" or target in (operator.add, operator.sub, operator.mul, operator.truediv,
                                                        torch.add, torch.sub, torch.mul, torch.div):
        return _binary(name, what, module, target, fn, args, refs)
    if what == "OnnxMatMul" or target in (torch.matmul, operator.matmul):
        if not one:
            raise Unsupported(f"no bound for a product of two inputs ({what}) at node {name}")
        a, b = args[0], args[1]
        if isinstance(a, _Ref):
            op = affine(abs_fn=lambda r, b=b: torch.matmul(r, b.abs()))
            if isinstance(b, torch.Tensor) and b.dim() == 2:
                op.matrix = b.T
            return op
        return affine(abs_fn=lambda r, a=a: torch.matmul(a.abs(), r))
    if what == "OnnxNeg" or target in (operator.neg, torch.neg):
        return affine(signs=(-1,))
    if what == "OnnxGemm" and one:  # pragma: no cover - onnx2torch converts Gemm to Linear where it can
        raise Unsupported(f"no bound for {what} at node {name}")

    # ---- affine operators with coefficients >= 0 (layout, pooling by averages)
    reduction = what == "OnnxReduceStaticAxes" and getattr(module, "operation_type", None) in _AVERAGING_REDUCTIONS
    if isinstance(module, _MONOTONE_MODULES) or what in _MONOTONE_ONNX or target in _MONOTONE_FUNCTIONS or (
            node.op == "call_method" and target in _MONOTONE_METHODS) or reduction:
        if what in ("OnnxPadStatic", "OnnxPadDynamic") and module.mode != "constant":
            raise Unsupported(f"no bound for {what} in mode {module.mode} at node {name}")
        if what in _MONOTONE_ONNX and what != "OnnxConcat" and len(refs) != 1:
            # its shape, pads or axes are computed from the input
            raise Unsupported(f"no bound for {what} with an argument computed from the input at node {name}")
        op = affine(signs=(1,) * len(refs))
        if len(refs) == 1 and (isinstance(module, (nn.Flatten, nn.Identity, nn.Dropout, nn.Unflatten)) or what in
                               _RESHAPING_ONNX or target in (
                torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze) or (node.op == "call_method" and target in (
                "view", "reshape", "flatten", "squeeze", "unsqueeze", "contiguous"))):
            op.back = "reshape"
        return op
    raise Unsupported(f"no bound for {what} at node {name}")


def _with_conv(op: Op, weight: torch.Tensor, given: dict, dims: int) -> Op:
    """``op`` with the direct backward path of a convolution (back == "conv"), where its padding
    is numeric (not "same" or "valid")."""
    def per_dim(v, default):
        v = default if v is None else v
        return tuple(int(x) for x in v) if isinstance(v, (tuple, list)) else (int(v),) * dims
    padding = given.get("padding", 0)
    if isinstance(padding, str):
        return op
    op.kernel = weight.to(torch.float64)
    op.conv = {"stride": per_dim(given.get("stride"), 1), "padding": per_dim(padding, 0),
               "dilation": per_dim(given.get("dilation"), 1), "groups": int(given.get("groups", 1) or 1)}
    op.back = "conv"
    return op


def _binary(name, what, module, target, fn, args, refs) -> Op:
    kind = {torch.add: "add", torch.sub: "sub", torch.mul: "mul"}.get(getattr(module, "math_op_function", None))
    if kind is None and module is not None:
        kind = "div"
    if module is None:
        kind = {operator.add: "add", torch.add: "add", operator.sub: "sub", torch.sub: "sub", operator.mul: "mul",
                torch.mul: "mul", operator.truediv: "div", torch.div: "div"}[target]
    a, b = args[0], args[1]
    if getattr(module, "broadcast", None) == 1 and getattr(module, "axis", None) is not None:
        raise Unsupported(f"no bound for {what} with old-style broadcast at node {name}")
    if kind in ("add", "sub"):
        if isinstance(a, _Ref) and isinstance(b, _Ref):
            return Op(name, "affine", tuple(refs), fn, signs=(1, 1) if kind == "add" else (1, -1))
        sign = -1 if (kind == "sub" and not isinstance(a, _Ref)) else 1
        return Op(name, "affine", tuple(refs), fn, signs=(sign,), back="shift")
    if len(refs) != 1:
        raise Unsupported(f"no bound for a product of two inputs ({what} {kind}) at node {name}")
    if kind == "div" and not isinstance(b, torch.Tensor | float | int):
        raise Unsupported(f"no bound for a division by an input at node {name}")
    if kind == "div" and isinstance(b, _Ref):
        raise Unsupported(f"no bound for a division by an input at node {name}")
    const = b if isinstance(a, _Ref) else a
    c = torch.as_tensor(const, dtype=torch.float64)
    factor = c.abs() if kind == "mul" else 1.0 / c.abs()
    return Op(name, "affine", tuple(refs), fn, abs_fn=lambda r, f=factor: r * f)
