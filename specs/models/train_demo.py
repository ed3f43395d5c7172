"""Train the bundled demo models on scikit-learn's 8x8 digits and export them to ONNX.

    python specs/models/train_demo.py        # rewrites digits_mlp.onnx, digits_cnn.onnx, digits_test.npz

Fixed seeds and single-threaded training make the run repeatable. Inputs are the 8x8 images
scaled to [0, 1], shape (1, 8, 8); outputs are 10 logits. scikit-learn is a dev dependency only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

HERE = Path(__file__).resolve().parent
SEED = 0
N_TEST_SAVED = 40


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10))


def cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 4 * 4, 10),
    )


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int = 60) -> nn.Module:
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(SEED)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


def export(model: nn.Module, path: Path) -> None:
    torch.onnx.export(model, torch.zeros(1, 1, 8, 8), str(path), input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False)


def main() -> None:
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]  # (N, 1, 8, 8) in [0, 1]
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=SEED, stratify=y)
    xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
    for name, build in (("digits_mlp", mlp), ("digits_cnn", cnn)):
        torch.manual_seed(SEED)
        model = train(build(), xt, yt)
        with torch.no_grad():
            acc = (model(torch.from_numpy(x_te)).argmax(1).numpy() == y_te).mean()
        export(model, HERE / f"{name}.onnx")
        print(f"{name}: test accuracy {acc:.4f}")
    np.savez_compressed(HERE / "digits_test.npz", x=x_te[:N_TEST_SAVED], y=y_te[:N_TEST_SAVED])
    np.save(HERE / "digits_mean.npy", x_tr.mean(axis=0))  # a reference input for KL-to-reference specs
    print(f"digits_test.npz: {N_TEST_SAVED} test images; digits_mean.npy: the mean training image")


if __name__ == "__main__":
    main()
