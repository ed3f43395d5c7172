"""CROWN's backward pass in patches, for the bounds of a convolution's neurons.

A neuron of a convolution's output depends on a small window of each layer before it (its
receptive field): 3 x 3 of the layer below for a 3 x 3 kernel, 5 x 5 two layers down. The dense
backward pass (``BoundEngine.backward``) carries each neuron's coefficients over the whole of
every earlier layer, almost all zeros: on the DeepGame MNIST CNN a neuron of its second
convolution has 288 coefficients that can be non-zero in the 21,632 of the layer below. Here the
coefficients of each neuron are kept as a patch, (C, ph, pw) at an anchor (the patch's top-left
corner in the layer's coordinates, which padding can put outside it), the representation of
auto_LiRPA's patches mode (Xu et al. 2020):

- through a convolution: the transposed convolution of the patch with the kernel (no padding)
  gives the patch over the convolution's input, anchored at anchor * stride - padding; its
  elements that fall on the padding are zeroed (they multiply zeros in the forward pass);
- through an elementwise nonlinearity: its relaxation's lines, gathered at the patch's elements;
- at the input: the box's corners, gathered likewise.

The arithmetic is the dense pass's, element for element, on the elements that can be non-zero:
the bounds are the same (to rounding), only cheaper. Where the chain goes on to an op with no
patch rule (a max-pool, a reshape, a dense layer, a second branch, an L1/L2 ball at the input), or
where a patch would be no smaller than its layer, the patches become dense coefficients over that
op and the dense pass finishes. Used for the intermediate bounds of plain CROWN
(``BoundEngine._crown_bounds``), where one backward pass runs per unstable neuron; the passes
with optimised slopes, split multipliers or recorded coefficients stay dense.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nnspec.bounds.graph import Op
from nnspec.bounds.relax import numel, relaxation


@dataclass
class Step:
    """One op of the chain, with the patch size over its output (the coefficients reaching it)."""
    op: Op
    size: tuple[int, int]  # (ph, pw) of the patch over op's output


def _conv2d(op: Op, engine) -> bool:
    if op.back != "conv" or op.kernel is None or op.kernel.dim() != 4 or len(op.inputs) != 1:
        return False
    return len(op.shape) == 3 and len(engine.by_name[op.inputs[0]].shape) == 3


def _elementwise(op: Op, engine) -> bool:
    from nnspec.bounds.engine import ELEMENTWISE
    return (op.kind in ELEMENTWISE and len(op.inputs) == 1 and len(op.shape) == 3
            and tuple(engine.by_name[op.inputs[0]].shape) == tuple(op.shape))


def chain(engine, start: Op, size: tuple[int, int] = (1, 1)) -> list[Step]:
    """The ops from ``start`` back towards the input that patches of ``size`` over start's output
    pass through, each with its patch size; the op after the last (its input) is where the
    patches end: the network's input (concretised in patches) or an op where they become dense.
    Empty where patches would not pay: start has no patch rule, or (from a single neuron, size
    1 x 1) the first convolution's patch is already no smaller than its input layer."""
    if not (_conv2d(start, engine) or _elementwise(start, engine)):
        return []
    steps = [Step(start, size)]
    op = start
    while True:
        if _conv2d(op, engine):
            k = op.kernel.shape[2:]
            st, dil = op.conv["stride"], op.conv["dilation"]
            size = tuple((s - 1) * st[i] + dil[i] * (k[i] - 1) + 1 for i, s in enumerate(size))
        below = engine.by_name[op.inputs[0]]
        h, w = below.shape[1:]
        if size[0] * size[1] >= h * w:  # no smaller than the layer: dense from here
            return steps if len(steps) >= 2 or op.kind != "affine" else []
        if not (_conv2d(below, engine) or _elementwise(below, engine) or below.kind == "input"):
            return steps
        steps.append(Step(below, size))
        if below.kind == "input":
            return steps
        op = below


def lower_bounds(engine, steps: list[Step], index: torch.Tensor, sign: torch.Tensor, bounds: dict) -> torch.Tensor:
    """Lower bounds (B, S) of sign[s] * value(start)[index[s]] (flat indices into the output of
    start, the first op of ``steps = chain(engine, start)``) over the boxes of ``bounds``, by
    CROWN's backward pass in patches."""
    S = index.numel()
    c_out, h, w = steps[0].op.shape
    c, y, x = index // (h * w), (index % (h * w)) // w, index % w
    a = torch.zeros((1, S, c_out, 1, 1), dtype=torch.float64)  # (b, S, C, ph, pw): b is 1 until a relaxation
    a[0, torch.arange(S), c, 0, 0] = sign.to(torch.float64)
    return run(engine, steps, a, y, x, bounds)


def from_dense(a: torch.Tensor, shape) -> tuple | None:
    """Dense coefficients (B, S, C, h, w) as patches (a, y, x) over each row's bounding box of
    non-zero elements (the largest box's size for all), where that box is at most a quarter of
    the layer; else None."""
    B, S, C, h, w = a.shape
    nz = (a != 0).any(0).any(1)  # (S, h, w)
    rows, cols = nz.any(2), nz.any(1)
    if not bool(rows.any()):
        return None
    first_y, first_x = rows.int().argmax(1), cols.int().argmax(1)
    last_y = h - 1 - rows.flip(1).int().argmax(1)
    last_x = w - 1 - cols.flip(1).int().argmax(1)
    size = (int((last_y - first_y).max()) + 1, int((last_x - first_x).max()) + 1)
    if 4 * size[0] * size[1] > h * w:
        return None
    index, pad = _flat_index(first_y, first_x, size, h, w)
    padded = F.pad(a, pad) if any(pad) else a
    flat = padded.reshape(B, S, C, -1)
    patch = flat.gather(3, index[None, :, None, :].expand(B, S, C, -1))
    return patch.reshape(B, S, C, size[0], size[1]), first_y, first_x


def run(engine, steps: list[Step], a: torch.Tensor, y: torch.Tensor, x: torch.Tensor, bounds: dict) -> torch.Tensor:
    """The backward pass along the chain ``steps`` (``chain``) from patches ``a`` (b, S, C, ph, pw)
    anchored at (y, x) over the first step's output: lower bounds (B, S)."""
    B = bounds["input"][0].shape[0]
    lower = torch.zeros((B, a.shape[1]), dtype=a.dtype)
    for k, step in enumerate(steps):
        op = step.op
        if op.kind == "input":
            box = bounds[op.name]
            if getattr(box, "ball", None) is not None:
                return lower + _dense_rest(engine, op, a, y, x, bounds, B)
            lo, hi = (_gather(t.to(a.dtype), y, x, a.shape[-2:]) for t in box)
            return lower + (a.clamp(min=0) * lo + a.clamp(max=0) * hi).flatten(2).sum(-1)
        if op.kind == "affine":  # a 2-D convolution
            bias = _gather(engine._cast(op, "bias", a.dtype), y, x, a.shape[-2:])
            lower = lower + (a * bias).flatten(2).sum(-1)
            a, y, x = _conv_back(engine, op, a, y, x)
        else:
            l, u = bounds[op.inputs[0]]
            al, bl, au, bu = (_gather(t.to(a.dtype), y, x, a.shape[-2:]) for t in relaxation(op, l, u))
            pos, neg = a.clamp(min=0), a.clamp(max=0)
            intercepts = neg * bu if op.kind in ("relu", "leaky_relu") else pos * bl + neg * bu
            lower = lower + intercepts.flatten(2).sum(-1)
            a = pos * al + neg * au
        below = engine.by_name[op.inputs[0]]
        if k == len(steps) - 1 or steps[k + 1].op is not below:
            return lower + _dense_rest(engine, below, a, y, x, bounds, B)
    raise AssertionError("a patch chain ends at an op")  # (chain() always ends at one)


MATRIX_LIMIT = 1 << 22  # elements (32 MB in float64) of a patch-to-patch matrix, beyond which the convolution runs


def _conv_back(engine, op: Op, a: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> tuple:
    """The patches over op's input: the transposed convolution of each patch (no padding), anchored
    at anchor * stride - padding, its elements on the padding zeroed. Where it is small enough,
    the transposed convolution is one matrix product: the same sums, several times faster than
    the convolution in float64 on a CPU (it has no fast kernel for float64)."""
    b, S, C = a.shape[:3]
    conv = op.conv
    kernel = engine._cast(op, "kernel", a.dtype)
    matrix = _patch_matrix(engine, op, kernel, a.shape[-2:])
    if matrix is not None:
        out = (a.reshape(b * S, -1) @ matrix[0]).reshape((b, S) + matrix[1])
    else:
        out = F.conv_transpose2d(a.reshape((b * S, C) + a.shape[-2:]), kernel, stride=conv["stride"],
                                 groups=conv["groups"], dilation=conv["dilation"])
        out = out.reshape((b, S) + out.shape[1:])
    y = y * conv["stride"][0] - conv["padding"][0]
    x = x * conv["stride"][1] - conv["padding"][1]
    h, w = engine.by_name[op.inputs[0]].shape[1:]
    return out * _inside(y, x, out.shape[-2:], h, w).to(out.dtype), y, x


def _patch_matrix(engine, op: Op, kernel: torch.Tensor, size) -> tuple | None:
    """The transposed convolution of op's kernel on (C, ph, pw) patches as a matrix
    (C * ph * pw, C_in * oh * ow) and the output patch's shape (C_in, oh, ow), made once per op,
    size and dtype; None where it would hold more than MATRIX_LIMIT elements."""
    conv = op.conv
    st, dil, k = conv["stride"], conv["dilation"], kernel.shape[2:]
    c_out, c_in = kernel.shape[0], kernel.shape[1] * conv["groups"]
    shape = (c_in,) + tuple((size[i] - 1) * st[i] + dil[i] * (k[i] - 1) + 1 for i in range(2))
    rows = c_out * size[0] * size[1]
    if rows * shape[0] * shape[1] * shape[2] > MATRIX_LIMIT:
        return None
    key = (op.name, "patch matrix", tuple(size), kernel.dtype)
    if key not in engine._casts:
        eye = torch.eye(rows, dtype=kernel.dtype).reshape((rows, c_out) + tuple(size))
        out = F.conv_transpose2d(eye, kernel, stride=st, groups=conv["groups"], dilation=dil)
        engine._casts[key] = out.reshape(rows, -1)
    return engine._casts[key], shape


def _inside(y: torch.Tensor, x: torch.Tensor, size, h: int, w: int) -> torch.Tensor:
    """(S, 1, ph, pw): whether each element of each patch lies in the h x w layer."""
    rows = y[:, None] + torch.arange(size[0])[None]
    cols = x[:, None] + torch.arange(size[1])[None]
    return (((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :])[:, None]


def _flat_index(y, x, size, h: int, w: int) -> tuple[torch.Tensor, tuple]:
    """Flat indices (S, ph * pw) of each patch's elements in the layer padded so that every patch
    lies inside it, and that padding (left, right, top, bottom)."""
    top, left = max(0, -int(y.min())), max(0, -int(x.min()))
    bottom, right = max(0, int(y.max()) + size[0] - h), max(0, int(x.max()) + size[1] - w)
    width = w + left + right
    rows = (y + top)[:, None] + torch.arange(size[0])[None]  # (S, ph)
    cols = (x + left)[:, None] + torch.arange(size[1])[None]  # (S, pw)
    return (rows[:, :, None] * width + cols[:, None, :]).flatten(1), (left, right, top, bottom)


def _gather(t: torch.Tensor, y, x, size) -> torch.Tensor:
    """A layer's tensor (b, C, h, w) at each patch's elements: (b, S, C, ph, pw), 0 off the layer."""
    b, C, h, w = t.shape
    index, pad = _flat_index(y, x, size, h, w)
    padded = F.pad(t, pad) if any(pad) else t
    out = padded.flatten(2)[:, :, index.flatten()]  # (b, C, S * ph * pw)
    return out.reshape(b, C, len(y), size[0], size[1]).transpose(1, 2)


def to_dense(a: torch.Tensor, y, x, shape) -> torch.Tensor:
    """The patches (b, S, C, ph, pw) as dense coefficients (b, S, C, h, w) over the layer (their
    elements off the layer, all 0, dropped)."""
    b, S, C, ph, pw = a.shape
    _, h, w = shape
    index, (left, right, top, bottom) = _flat_index(y, x, (ph, pw), h, w)
    hp, wp = h + top + bottom, w + left + right
    dense = torch.zeros((b, S, C, hp * wp), dtype=a.dtype)
    dense.scatter_(3, index[None, :, None, :].expand(b, S, C, ph * pw), a.reshape(b, S, C, ph * pw))
    return dense.reshape(b, S, C, hp, wp)[:, :, :, top:top + h, left:left + w]


def _dense_rest(engine, op: Op, a, y, x, bounds, B: int) -> torch.Tensor:
    """The rest of the pass from ``op`` (whose value the patches multiply), dense."""
    dense = to_dense(a, y, x, tuple(op.shape)).expand((B,) + (-1,) * 4)
    if op.kind == "input":
        from nnspec.bounds.balls import minimum
        return minimum(dense, bounds[op.name])
    return engine.backward(op.name, dense.contiguous(), bounds, patch=True)


def row_elements(steps: list[Step], engine) -> int:
    """The most coefficients one row holds at any op of the chain, and where it goes dense after
    it, the widest layer before that: for the chunking of rows."""
    most = 0
    for step in steps:
        c = step.op.shape[0]
        most = max(most, c * step.size[0] * step.size[1])
    last = steps[-1].op
    if last.kind != "input":
        end = engine.graph.index[last.inputs[0]]
        most = max([most] + [numel(o.shape) for o in engine.ops[: end + 1]])
    return most
