"""Shared helpers for the benchmarks: locating external data, timing."""

from __future__ import annotations

import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def data_root() -> Path | None:
    from nnspec.resources import external_data_root

    return external_data_root()


def best_time(fn, repeat: int = 5, min_seconds: float = 0.3) -> float:
    """Best wall time of fn() over `repeat` rounds, each looped for at least `min_seconds`."""
    best = float("inf")
    for _ in range(repeat):
        n, start = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                break
        best = min(best, elapsed / n)
    return best


def paired_best_times(fns, repeat: int = 9, min_seconds: float = 0.2) -> list[float]:
    """Best times of several functions measured in alternation, so that a noisy machine slows
    them alike; a ratio of these is far steadier than of separately taken timings."""
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            best[i] = min(best[i], best_time(fn, repeat=1, min_seconds=min_seconds))
    return best


def deepgame_mnist():
    """(model, images (N, 1, 28, 28) in [0, 1], labels) from the external data, or None."""
    import numpy as np

    from nnspec.models.inputs import read_idx
    from nnspec.models.loading import load_model

    root = data_root()
    if root is None or not (root / "models/deepgame_mnist.onnx").is_file():
        print("needs ../shared/data (or NNSPEC_DATA) with models/deepgame_mnist.onnx and mnist/")
        return None
    model = load_model(root / "models/deepgame_mnist.onnx")
    images = read_idx(root / "mnist/t10k-images-idx3-ubyte.gz").astype(np.float32)[:, None] / 255.0
    labels = read_idx(root / "mnist/t10k-labels-idx1-ubyte.gz").astype(np.int64)
    return model, images, labels


def demo_mlp_digits(count: int, net: str = "mlp"):
    """The demo MLP (or ``net="cnn"``: the demo CNN; float32) and its first ``count`` correctly
    classified test digits (float32, flat, labels)."""
    import numpy as np
    import torch

    from nnspec.models.loading import load_model

    model = load_model(ROOT / f"specs/models/digits_{net}.onnx")
    data = np.load(ROOT / "specs/models/digits_test.npz")
    xs, ys = torch.from_numpy(data["x"]).reshape(-1, 64), torch.from_numpy(data["y"]).long()
    keep = (model(xs.reshape((-1,) + tuple(model.input_shape))).argmax(1) == ys).nonzero().flatten()[:count]
    return model, xs[keep], ys[keep]
