"""Shared builders for tests: tiny models with known answers, properties built in code."""

from __future__ import annotations

import torch
from torch import nn

from nnspec.backends.base import BoundTask
from nnspec.backends.registry import MADS
from nnspec.models.loading import from_module
from nnspec.properties import expressions as ex
from nnspec.properties.regions import Ball
from nnspec.properties.spec import Property, Requirement
from nnspec.span import Span

SPAN = Span("test.nnspec", 1, 1, 1, 2)


def linear_model(n: int = 6, m: int = 3, seed: int = 0, dtype=torch.float64):
    torch.manual_seed(seed)
    lin = nn.Linear(n, m).to(dtype)
    return from_module(lin, (n,), name="linear", dtype=dtype), lin


def relu_net(sizes=(4, 8, 8, 3), seed: int = 0, dtype=torch.float64) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1]).to(dtype)


def relu_case(seed: int, count: int = 2, sizes=(4, 10, 10, 3)) -> tuple[nn.Module, torch.Tensor]:
    """A small float64 ReLU net and ``count`` inputs in [0, 1], both from ``seed``."""
    net = relu_net(sizes, seed=seed)
    x = torch.rand(count, sizes[0], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return net, x


def prop(expression, norm="linf", radius=0.5, kind="robustness", window=None) -> Property:
    return Property(name="p", kind=kind, expression=expression, region=Ball(norm, radius, window),
                    requirements=(Requirement("no_violation", None, None, None, SPAN),), solver=None,
                    span=SPAN, uses_label=True)


def task(p: Property, centres, labels, lower=-10.0, upper=10.0, logits=True, **options) -> BoundTask:
    from nnspec.planning.plan import default_options

    opts = default_options(MADS, centres[0].numel(), p.region.norm) | {"budget": 3000, "search": 8} | options
    n = centres[0].numel()
    return BoundTask(p, centres, torch.as_tensor(labels), torch.full((n,), float(lower)),
                     torch.full((n,), float(upper)), logits, opts)


def gap(target=1, margin=0.0, reading="logits"):
    return ex.ConfidenceGap("label" if target is not None else "untargeted", target, margin, reading)
