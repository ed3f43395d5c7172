"""Differential checks against onnxruntime, the reference ONNX runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from nnspec.errors import ModelError
from nnspec.models.model import Model


def onnxruntime_session(path: str | Path, model: Model):
    """A function x (B, *input_shape) -> outputs (B, m) evaluated by onnxruntime, one input at a
    time (so it also works for fixed-batch files), with the model's normalisation applied."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ModelError("--cross-check needs onnxruntime: pip install onnxruntime") from None
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    meta = session.get_inputs()[0]
    name, dims = meta.name, meta.shape

    def run(x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32)
        if model._mean is not None:
            x = (x - model._mean.cpu().float()) / model._std.cpu().float()
        arr = x.numpy()
        outs = []
        for row in arr:
            if len(dims) == len(row.shape):  # a network without a batch dimension
                feed = row
            else:
                feed = row.reshape([1] + [int(d) if isinstance(d, int) else s for d, s in zip(dims[1:], row.shape)])
            outs.append(np.asarray(session.run(None, {name: feed.astype(np.float32)})[0]).reshape(-1))
        return torch.from_numpy(np.stack(outs)).to(torch.float64)

    return run


def max_difference(path: str | Path, model: Model, lower: torch.Tensor, upper: torch.Tensor,
                   count: int = 16, seed: int = 0) -> float:
    """Largest |torch - onnxruntime| over random inputs in the domain."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand((count, model.n_inputs), generator=gen, dtype=torch.float64)
    x = (lower + u * (upper - lower)).reshape((count,) + model.input_shape)
    ours = model(x.to(model.dtype)).to(torch.float64)
    theirs = onnxruntime_session(path, model)(x)
    return float((ours - theirs).abs().max())
