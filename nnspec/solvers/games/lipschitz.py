"""Sound Lipschitz constants of a logit margin for feed-forward networks, from their layers
(dense, convolution, max-pooling, and 1-Lipschitz activations).

For y = W_k s(... s(W_1 x + b_1) ...) with 1-Lipschitz activations (ReLU, tanh, sigmoid is 1/4), the
margin m(x) = y_l - y_t satisfies |m(x) - m(x')| <= ||(W_k[l] - W_k[t]) ||_dual * prod_j ||W_j||_p
* ||x - x'||_p: a product of operator norms. Loose, but a true bound, so heuristics built from it
are admissible. Only plain Sequential networks of Linear / Flatten / ReLU / Tanh / Sigmoid are
handled; anything else raises, rather than returning something unsound.
"""

from __future__ import annotations

import numpy as np
from torch import nn

_ACT_LIP = {nn.ReLU: 1.0, nn.Tanh: 1.0, nn.Sigmoid: 0.25, nn.Identity: 1.0, nn.Flatten: 1.0}


def conv_norm(w: np.ndarray, norm: str) -> float:
    """A sound bound of a 2-D convolution's operator norm (any stride or padding): every output
    unit sums at most one term per kernel weight (L-inf: max over output channels of the kernel's
    absolute sum), every input unit meets each kernel weight at most once (L1: max over input
    channels), and ||A||_2 <= sqrt(||A||_1 ||A||_inf) (Hoelder)."""
    a = np.abs(w)
    linf, l1 = float(a.sum(axis=(1, 2, 3)).max()), float(a.sum(axis=(0, 2, 3)).max())
    return {"linf": linf, "l1": l1, "l2": float(np.sqrt(linf * l1))}[norm]


def pool_norm(kernel: list[int], strides: list[int], norm: str) -> float:
    """Max-pooling: |max a - max b| <= max |a - b| per window; an input lies in at most
    prod(ceil(k / s)) windows, so the factor is that count to the power 1/p (1 for L-inf)."""
    overlap = float(np.prod([int(np.ceil(k / s)) for k, s in zip(kernel, strides)]))
    return {"linf": 1.0, "l1": overlap, "l2": float(np.sqrt(overlap))}[norm]


def operator_norm(w, norm: str) -> float:
    if isinstance(w, tuple):  # ("conv", weights) or ("pool", kernel, strides)
        return conv_norm(w[1], norm) if w[0] == "conv" else pool_norm(w[1], w[2], norm)
    if norm == "linf":
        return float(np.abs(w).sum(axis=1).max())
    if norm == "l1":
        return float(np.abs(w).sum(axis=0).max())
    if norm == "l2":
        return float(np.linalg.norm(w, 2))
    raise ValueError(f"no operator norm for {norm!r}")


def _dual(v: np.ndarray, norm: str) -> float:
    return float({"linf": np.abs(v).sum(), "l1": np.abs(v).max(), "l2": np.linalg.norm(v)}[norm])


def layers_of_module(module: nn.Module) -> tuple[list[np.ndarray], float]:
    """Weights of the Linear layers and the product of activation constants of a plain Sequential."""
    layers = list(module.children()) if isinstance(module, nn.Sequential) else [module]
    weights, factor = [], 1.0
    for layer in layers:
        if isinstance(layer, nn.Linear):
            weights.append(layer.weight.detach().double().numpy())
        elif type(layer) in _ACT_LIP:
            factor *= _ACT_LIP[type(layer)]
        else:
            raise ValueError(f"no sound Lipschitz bound for layer {type(layer).__name__}")
    return weights, factor


def layers_of_onnx(path) -> tuple[list[np.ndarray], float]:
    """The same for an ONNX file that is one chain of Gemm / MatMul+Add / Relu / Tanh / Sigmoid /
    Flatten / Reshape (to a vector) / Identity nodes; anything else raises."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    init = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in proto.graph.initializer}
    weights, factor = [], 1.0
    act = {"Relu": 1.0, "Tanh": 1.0, "Sigmoid": 0.25, "Flatten": 1.0, "Identity": 1.0, "Add": 1.0, "Reshape": 1.0}
    for node in proto.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Conv" and node.input[1] in init:
            if attrs.get("group", 1) != 1 or any(d != 1 for d in attrs.get("dilations", [1, 1])):
                raise ValueError("grouped or dilated convolutions are not handled")
            weights.append(("conv", init[node.input[1]]))
            continue
        if node.op_type == "MaxPool":
            kernel = list(attrs["kernel_shape"])
            weights.append(("pool", kernel, list(attrs.get("strides", kernel))))
            continue
        if node.op_type == "Gemm":
            w = init.get(node.input[1])
            if w is None or attrs.get("alpha", 1.0) != 1.0:
                raise ValueError("a Gemm without constant weights")
            trans = attrs.get("transB", 0)
            weights.append(w if trans else w.T)
        elif node.op_type == "MatMul" and node.input[1] in init:
            weights.append(init[node.input[1]].T)
        elif node.op_type == "Add" and not any(i in init for i in node.input):
            raise ValueError("a residual Add: not a plain chain")
        elif node.op_type in act:
            factor *= act[node.op_type]
        else:
            raise ValueError(f"no sound Lipschitz bound for ONNX operator {node.op_type}")
    if not weights or isinstance(weights[-1], tuple):
        raise ValueError("the network must end in a dense layer")
    return weights, factor


def margin_from_layers(weights: list[np.ndarray], factor: float, label: int, target: int | None, norm: str) -> float:
    body = factor
    for w in weights[:-1]:
        body *= operator_norm(w, norm)
    last = weights[-1]
    targets = [target] if target is not None else [t for t in range(last.shape[0]) if t != label]
    return body * max(_dual(last[label] - last[t], norm) for t in targets)


def margin_lipschitz(module: nn.Module, label: int, target: int | None, norm: str) -> float:
    """A sound Lipschitz constant of y_label - y_target (target None: the max over targets)."""
    weights, factor = layers_of_module(module)
    if not weights:
        raise ValueError("no Linear layer")
    return margin_from_layers(weights, factor, label, target, norm)


def cell_radius(norm: str, tau: float, n: int) -> float:
    """Half the diagonal of a tau-grid cell in the game's norm, 1/2 ||tau 1_n||_p: every point of
    the domain is that close to a grid input (DeepGame Lemma 4; also at clipped domain edges, where
    grid values are closer together)."""
    return 0.5 * tau * {"l1": n, "l2": float(np.sqrt(n)), "linf": 1.0}[norm]


def estimate_lipschitz(evaluate, x0: np.ndarray, lower: np.ndarray, upper: np.ndarray, norm: str, radius: float,
                       points: int = 4, seed: int = 0) -> tuple[float, int]:
    """A sampled Lipschitz constant of s in ``norm``: the largest dual norm of forward-difference
    gradients at the centre and ``points - 1`` random points of the ball's box (n + 1 queries each).
    A sample can only under-estimate the true constant: bounds built from it are estimates."""
    n = x0.size
    rng = np.random.default_rng(seed)
    h = max(1e-4 * radius, 1e-6)
    centres = [x0] + [np.clip(x0 + rng.uniform(-radius, radius, n), lower, upper) for _ in range(points - 1)]
    best, queries = 0.0, 0
    for c in centres:
        step = np.where(c + h <= upper, h, -h)  # stay inside the domain
        pts = np.repeat(c[None], n + 1, axis=0)
        pts[1 + np.arange(n), np.arange(n)] += step
        s = evaluate(pts)
        queries += n + 1
        grad = (s[1:] - s[0]) / step
        best = max(best, _dual(grad, norm))
    return best, queries
