"""Norm balls intersected with the input domain, as batched tensor operations."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

NORMS = ("linf", "l2", "l1", "l0")


@dataclass(frozen=True, slots=True)
class Window:
    """A rectangular patch (rows, columns) of an image; perturbations stay inside it."""

    row: int
    col: int
    height: int
    width: int

    def mask(self, shape: tuple[int, ...]) -> torch.Tensor:
        """A 0/1 mask of ``shape`` (C, H, W) or (H, W) that is 1 inside the window."""
        mask = torch.zeros(shape)
        mask[..., self.row:self.row + self.height, self.col:self.col + self.width] = 1.0
        return mask


@dataclass(frozen=True, slots=True)
class Ball:
    """B(x, d, p) = { y : ||y - x||_p <= d }, optionally restricted to a window."""

    norm: str  # linf | l2 | l1 | l0
    radius: float
    window: Window | None = None
    feature: tuple[str, tuple[tuple[str, object], ...], int] | None = None  # (partition, args, index)

    def distance(self, delta: torch.Tensor) -> torch.Tensor:
        """The norm of each row of ``delta`` (B, n)."""
        return distance(delta, self.norm)

    def contains(self, delta: torch.Tensor, slack: float = 1e-6) -> torch.Tensor:
        return self.distance(delta) <= self.radius * (1 + slack) + slack

    def describe(self) -> str:
        text = f"{self.norm}({self.radius:g})"
        if self.window is not None:
            w = self.window
            text += f" on window({w.row}, {w.col}, {w.height}, {w.width})"
        if self.feature is not None:
            name, args, index = self.feature
            shown = ", ".join(str(v) if k.startswith("_") else f"{k}={v}" for k, v in args)
            text += f" on feature({name}({shown}), {index})"
        return text

    def allowed(self, shape: tuple[int, ...], centre, score=None) -> "torch.Tensor | None":
        """The 0/1 mask (flattened) of the dimensions the region may change; None: all of them."""
        if self.window is None and self.feature is None:
            return None
        mask = torch.ones(int(torch.tensor(shape).prod()), dtype=torch.float64)
        if self.window is not None:
            mask *= self.window.mask(shape).reshape(-1).to(torch.float64)
        if self.feature is not None:
            from nnspec.solvers.games.features import by_name

            name, args, index = self.feature
            parts = by_name(name, dict(args), shape, centre.reshape(-1).double().numpy(), score)
            if index >= len(parts):
                raise ValueError(f"feature {index} does not exist: {name} gives {len(parts)} features")
            keep = torch.zeros_like(mask)
            keep[torch.from_numpy(parts[index])] = 1.0
            mask *= keep
        return mask


def distance(delta: torch.Tensor, norm: str) -> torch.Tensor:
    flat = delta.reshape(delta.shape[0], -1)
    if norm == "linf":
        return flat.abs().amax(dim=1)
    if norm == "l2":
        return flat.norm(dim=1)
    if norm == "l1":
        return flat.abs().sum(dim=1)
    if norm == "l0":
        return (flat.abs() > 1e-12).sum(dim=1).to(flat.dtype)
    raise ValueError(f"unknown norm {norm!r}")


def distance_np(delta: np.ndarray, norm: str) -> np.ndarray:
    """``distance`` in numpy, over the last axis of ``delta`` (..., n): for the searches'
    bookkeeping after each model call, where a torch operation costs ten times a numpy one."""
    if norm == "linf":
        return np.abs(delta).max(axis=-1)
    if norm == "l2":
        return np.sqrt(np.einsum("...i,...i->...", delta, delta))
    if norm == "l1":
        return np.abs(delta).sum(axis=-1)
    if norm == "l0":
        return (np.abs(delta) > 1e-12).sum(axis=-1).astype(delta.dtype)
    raise ValueError(f"unknown norm {norm!r}")


@dataclass(frozen=True, slots=True)
class BoxBound:
    """One side of a box (or its width): a number for every dimension, one per dimension, or an
    array file (``.npy``; ``.npz`` with ``key``) holding one row per dimension or per input."""

    kind: str  # value | list | file
    value: object  # float | tuple[float, ...] | path
    key: str | None = None

    def describe(self) -> str:
        if self.kind == "value":
            return f"{self.value:g}"
        if self.kind == "list":
            vals = self.value
            shown = ", ".join(f"{v:g}" for v in vals[:4]) + (", ..." if len(vals) > 4 else "")
            return f"[{shown}]"
        return f'"{self.value}"' + (f"[{self.key}]" if self.key else "")


@dataclass(frozen=True, slots=True)
class Box:
    """A box given per dimension: [lower, upper] (absolute), or the input plus/minus ``width``.

    Inside the pipeline a box runs as an L-inf ball around its centre (the input, or the box's
    midpoint) with the box as the domain: that ball cut to the box is exactly the box, so every
    backend and bound method works on it unchanged; radii are L-inf distances from the centre.
    """

    lower: BoxBound | None
    upper: BoxBound | None
    width: BoxBound | None = None
    index: int = 0  # which box of a union (0-based)
    of: int = 1

    @property
    def relative(self) -> bool:
        return self.width is not None

    def describe(self) -> str:
        text = f"box(width={self.width.describe()})" if self.relative else \
            f"box({self.lower.describe()}, {self.upper.describe()})"
        return text + (f" [box {self.index + 1} of {self.of}]" if self.of > 1 else "")
