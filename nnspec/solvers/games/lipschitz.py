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


def margin_lipschitz(module: nn.Module, label: int, target: int | None, norm: str) -> float:
    """A sound Lipschitz constant of y_label - y_target (target None: the max over targets)."""
    layers = list(module.children()) if isinstance(module, nn.Sequential) else [module]
    weights, factor = [], 1.0
    for layer in layers:
        if isinstance(layer, nn.Linear):
            weights.append(layer.weight.detach().double().numpy())
        elif type(layer) in _ACT_LIP:
            factor *= _ACT_LIP[type(layer)]
        else:
            raise ValueError(f"no sound Lipschitz bound for layer {type(layer).__name__}")
    if not weights:
        raise ValueError("no Linear layer")
    body = factor
    for w in weights[:-1]:
        body *= operator_norm(w, norm)
    last = weights[-1]
    targets = [target] if target is not None else [t for t in range(last.shape[0]) if t != label]
    return body * max(_dual(last[label] - last[t], norm) for t in targets)
