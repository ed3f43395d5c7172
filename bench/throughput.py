"""Throughput of nnspec's evaluation path against the raw PyTorch forward (issue 7).

    python bench/throughput.py [--device cpu|cuda]

For each network: inputs/second of the plain forward of the converted module at its best batch
size, with the normalisation (x - mean) / std written by hand as a user would, and of
``Model.__call__`` (counting, chunking, normalisation, finiteness check) at the same batch, and
their ratio (above 1: nnspec's fused normalisation beats the two-pass hand-written one). Networks: the demo MLP and CNN, the DeepGame MNIST CNN and an ACAS Xu net
(the last two from ../shared/data, or NNSPEC_DATA; skipped when absent).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import ROOT, data_root, paired_best_times  # noqa: E402
from nnspec.models.loading import load_model  # noqa: E402

BATCHES = (64, 256, 1024, 4096)


def networks() -> list[tuple[str, Path]]:
    nets = [("demo MLP", ROOT / "specs/models/digits_mlp.onnx"), ("demo CNN", ROOT / "specs/models/digits_cnn.onnx")]
    root = data_root()
    if root:
        nets += [("DeepGame MNIST CNN", root / "models/deepgame_mnist.onnx"),
                 ("ACAS Xu 1_1", root / "vnncomp2022/acasxu/onnx/ACASXU_run2a_1_1_batch_2000.onnx")]
    return [(n, p) for n, p in nets if p.is_file()]


def measure(path: Path, device: str) -> dict:
    model = load_model(path, device=device, max_batch=4096)
    model.set_normalization([0.1307], [0.3081])  # the path a spec with `normalize` takes
    module = model.module
    rows = {}
    for b in BATCHES:
        x = torch.rand((b,) + model.input_shape)
        xd = x.to(device)

        def raw():  # the same normalisation, written by hand, then the plain forward
            with torch.inference_mode():
                module((xd - 0.1307) / 0.3081).cpu()

        def ours():
            model(x)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t_raw, t_ours = paired_best_times([raw, ours])
        rows[b] = (b / t_raw, b / t_ours)
    best_b = max(rows, key=lambda b: rows[b][0])
    raw_rate, our_rate = rows[best_b]
    return {"batching": model.batching, "batch": best_b, "raw": raw_rate, "nnspec": our_rate, "ratio": our_rate / raw_rate}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    print("| network | batching | best batch | raw forward (inputs/s) | nnspec Model (inputs/s) | ratio |")
    print("|---|---|---|---|---|---|")
    for name, path in networks():
        r = measure(path, args.device)
        print(f"| {name} | {r['batching']} | {r['batch']} | {r['raw']:,.0f} | {r['nnspec']:,.0f} | {r['ratio']:.3f} |")


if __name__ == "__main__":
    main()
