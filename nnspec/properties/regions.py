"""Norm balls intersected with the input domain, as batched tensor operations."""

from __future__ import annotations

from dataclasses import dataclass

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
        return text


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
