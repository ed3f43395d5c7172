"""Interval bound propagation (IBP): a sound lower bound of the logit margin over a box, and from
it a certified radius by bisection.

Intervals go through the network's graph node by node in float64: affine layers (Linear, Conv2d,
eval-mode BatchNorm) as centre and radius (W c + b, |W| r), monotone layers (ReLU, sigmoid, tanh,
max-pooling, flatten) on both ends. The last Linear layer is folded with the margin, y_l - y_t =
(W_l - W_t) h + (b_l - b_t), so the margin's interval is exact for the box of h rather than the
difference of two loose logit intervals. Any other operator raises ``ValueError`` rather than
return something unsound.

A box [x0 - r, x0 + r] (clipped to the domain) holds the L-inf, L2 and L1 balls of radius r, so a
positive lower margin on it proves every input of those balls keeps its label: the radius is
certified, in any of the three norms (loosely for L1/L2, where the ball is much smaller than the box).
"""

from __future__ import annotations

import operator

import torch
from torch import fx, nn

_MONOTONE = (nn.ReLU, nn.Sigmoid, nn.Tanh, nn.MaxPool2d, nn.MaxPool1d, nn.Flatten, nn.Identity, nn.Dropout,
             nn.LeakyReLU)


def _affine(layer: nn.Module, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    c, r = (hi + lo) / 2, (hi - lo) / 2
    if isinstance(layer, nn.Linear):
        w = layer.weight.double()
        c2 = c @ w.T + (layer.bias.double() if layer.bias is not None else 0)
        r2 = r @ w.abs().T
    elif isinstance(layer, nn.Conv2d):
        w = layer.weight.double()
        b = layer.bias.double() if layer.bias is not None else None
        args = dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation, groups=layer.groups)
        if layer.padding_mode != "zeros":
            raise ValueError(f"no interval rule for padding mode {layer.padding_mode!r}")
        c2 = nn.functional.conv2d(c, w, b, **args)
        r2 = nn.functional.conv2d(r, w.abs(), None, **args)
    else:  # BatchNorm in eval mode: an affine map per channel
        scale = layer.weight.double() / torch.sqrt(layer.running_var.double() + layer.eps)
        shift = layer.bias.double() - layer.running_mean.double() * scale
        shape = (1, -1) + (1,) * (c.dim() - 2)
        c2 = c * scale.view(shape) + shift.view(shape)
        r2 = r * scale.abs().view(shape)
    return c2 - r2, c2 + r2


def _layers(module: nn.Module) -> list[nn.Module]:
    """The chain of layers of a Sequential or of a torch.fx graph that is one chain of modules."""
    if isinstance(module, nn.Sequential):
        return list(module.children())
    if isinstance(module, fx.GraphModule):
        layers, prev = [], None
        for node in module.graph.nodes:
            if node.op == "placeholder":
                prev = node
            elif node.op == "call_module":
                if len(node.args) != 1 or node.args[0] is not prev or node.kwargs:
                    raise ValueError("interval bounds need a chain of layers")
                layers.append(module.get_submodule(node.target))
                prev = node
            elif node.op == "output":
                out = node.args[0]
                out = out[0] if isinstance(out, (tuple, list)) and len(out) == 1 else out
                if out is not prev:
                    raise ValueError("interval bounds need a chain of layers")
            elif not (node.op == "call_function" and node.target is operator.getitem):
                raise ValueError(f"no interval rule for graph node {node.op} {node.target}")
        return layers
    return [module]


def margin_lower_bounds(module: nn.Module, lo: torch.Tensor, hi: torch.Tensor, label: int,
                        target: int | None = None) -> torch.Tensor:
    """Sound lower bounds (B,) of min over t != label (or t = target) of y_label - y_t over each box
    [lo[b], hi[b]] of the module's input, the boxes batched (B, *input_shape)."""
    layers = _layers(module)
    if not layers or not isinstance(layers[-1], nn.Linear):
        raise ValueError("interval bounds need a network that ends in a Linear layer")
    lo, hi = lo.double(), hi.double()
    for layer in layers[:-1]:
        if isinstance(layer, (nn.Linear, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d)):
            lo, hi = _affine(layer, lo, hi)
        elif isinstance(layer, _MONOTONE):
            lo, hi = layer(lo), layer(hi)
        else:
            raise ValueError(f"no interval rule for layer {type(layer).__name__}")
    last = layers[-1]
    w, b = last.weight.double(), (last.bias.double() if last.bias is not None else torch.zeros(last.out_features,
                                                                                               dtype=torch.float64))
    targets = [target] if target is not None else [t for t in range(w.shape[0]) if t != label]
    dw = w[label][None] - w[targets]  # (T, h)
    db = b[label] - b[targets]
    c, r = (hi + lo) / 2, (hi - lo) / 2
    low = c @ dw.T - r @ dw.abs().T + db  # (B, T)
    return low.min(dim=1).values


def certified_radius(module: nn.Module, input_shape: tuple[int, ...], x0: torch.Tensor, label: int, radius: float,
                     lower: torch.Tensor, upper: torch.Tensor, target: int | None = None, scale=None, shift=None,
                     threshold: float = 0.0, free: torch.Tensor | None = None, rounds: int = 4,
                     points: int = 8) -> float:
    """The largest r in [0, radius] (to about 7/points**rounds of itself) whose box around ``x0`` (clipped
    to [lower, upper]) IBP proves to keep the margin above ``threshold``; 0 if none. ``scale``/``shift``:
    the normalisation x * scale + shift the model applies before ``module``; ``free``: a 0/1 mask of
    the dimensions that may move (a window), the others stay at x0. Each round checks ``points``
    radii in one batched pass and narrows the interval around the largest certified one."""
    device = next(module.parameters()).device
    x0 = x0.double().reshape(1, -1).to(device)
    lower, upper = lower.double().reshape(1, -1).to(device), upper.double().reshape(1, -1).to(device)
    shape = (-1,) + tuple(input_shape)
    mask = torch.ones_like(x0) if free is None else free.double().reshape(1, -1).to(device)

    def margins(rs: torch.Tensor) -> torch.Tensor:
        lo = torch.minimum(torch.maximum(x0 - rs[:, None] * mask, lower), x0)
        hi = torch.maximum(torch.minimum(x0 + rs[:, None] * mask, upper), x0)
        lo, hi = _normalise(lo.reshape(shape), hi.reshape(shape), scale, shift)
        return margin_lower_bounds(module, lo, hi, label, target)

    with torch.no_grad():
        # The bounds are exact arithmetic on the weights in float64; the model itself runs in its own
        # dtype (float32: relative rounding about 1e-7 per operation). A margin that IBP bounds by
        # less than the rounding could still flip on the model, so a proof asks for a little more.
        centre_margin = float(margins(torch.zeros(1, dtype=torch.float64))[0])
        eps = torch.finfo(next(module.parameters()).dtype).eps
        slack = 64 * eps * (1.0 + abs(centre_margin))

        def proves(rs: torch.Tensor) -> torch.Tensor:
            return margins(rs) > threshold + slack

        # first a geometric sweep radius * 8^-k (one batch), then linear refinement of the bracket;
        # certification is monotone in r (the boxes are nested, interval arithmetic respects inclusion)
        rs = radius * torch.pow(8.0, -torch.arange(0, 16, dtype=torch.float64))
        ok = proves(rs)
        if not bool(ok.any()):
            return 0.0
        k = int(ok.nonzero()[0])
        if k == 0:
            return radius
        good, bad = float(rs[k]), float(rs[k - 1])
        for _ in range(rounds):
            rs = torch.linspace(good, bad, points + 1, dtype=torch.float64)[1:]
            ok = proves(rs)
            if bool(ok.all()):
                return float(rs[-1])
            first_bad = int((~ok).nonzero()[0])
            good, bad = (float(rs[first_bad - 1]) if first_bad > 0 else good), float(rs[first_bad])
    return good


def _normalise(lo, hi, scale, shift):
    if scale is None:
        return lo, hi
    scale = torch.as_tensor(scale, dtype=torch.float64, device=lo.device)
    shift = torch.as_tensor(shift, dtype=torch.float64, device=lo.device)
    a, b = lo * scale + shift, hi * scale + shift
    return torch.minimum(a, b), torch.maximum(a, b)
