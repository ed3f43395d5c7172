"""Sound Lipschitz constants of a logit margin for feed-forward networks, from their layers.

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


def operator_norm(w: np.ndarray, norm: str) -> float:
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
        if node.op_type == "Gemm":
            w = init.get(node.input[1])
            attrs = {a.name: a for a in node.attribute}
            if w is None or ("alpha" in attrs and attrs["alpha"].f != 1.0):
                raise ValueError("a Gemm without constant weights")
            trans = attrs["transB"].i if "transB" in attrs else 0
            weights.append(w if trans else w.T)
        elif node.op_type == "MatMul" and node.input[1] in init:
            weights.append(init[node.input[1]].T)
        elif node.op_type == "Add" and not any(i in init for i in node.input):
            raise ValueError("a residual Add: not a plain chain")
        elif node.op_type in act:
            factor *= act[node.op_type]
        else:
            raise ValueError(f"no sound Lipschitz bound for ONNX operator {node.op_type}")
    if not weights:
        raise ValueError("no linear layer")
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
