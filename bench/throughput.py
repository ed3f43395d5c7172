"""Throughput of nnspec's evaluation path against the best raw backend (issues 7 and 14).

    python -m bench.throughput [--device cpu|cuda] [--threads N]

For each network, in one run, inputs/second at each one's best batch size of:
- torch: the plain forward of the converted module (inference mode), with the normalisation
  (x - mean) / std written by hand as a user would;
- onnxruntime: the bare ``InferenceSession.run`` on the batch-repaired graph (the same repair
  that lets fixed-batch-1 files batch), the normalisation written by hand;
- nnspec: ``Model.__call__`` with the default engine (auto), which adds counting, budgets,
  chunking, the normalisation and the finiteness check;
and nnspec / best(torch, onnxruntime). Networks: the demo MLP and CNN, and from ../shared/data (or
NNSPEC_DATA; skipped when absent) the DeepGame MNIST CNN, ACAS Xu 1_1, mnist_fc 256x4 and the
oval21 CIFAR base net. The three are measured in alternation (``paired_best_times``) so that the
machine's noise hits them alike.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from bench.common import ROOT, data_root, paired_best_times
from nnspec.models.loading import load_model

BATCHES = (16, 64, 256, 1024, 4096)
MEAN, STD = 0.1307, 0.3081


def networks() -> list[tuple[str, Path]]:
    nets = [("demo MLP", ROOT / "specs/models/digits_mlp.onnx"), ("demo CNN", ROOT / "specs/models/digits_cnn.onnx")]
    root = data_root()
    if root:
        v = root / "vnncomp2022"
        nets += [("DeepGame MNIST CNN", root / "models/deepgame_mnist.onnx"),
                 ("ACAS Xu 1_1", v / "acasxu/onnx/ACASXU_run2a_1_1_batch_2000.onnx"),
                 ("mnist_fc 256x4", v / "mnist_fc/onnx/mnist-net_256x4.onnx"),
                 ("oval21 cifar_base_kw", v / "oval21/onnx/cifar_base_kw.onnx")]
    return [(n, p) for n, p in nets if p.is_file()]


def measure(path: Path, device: str, batches=BATCHES) -> dict:
    model = load_model(path, device=device, max_batch=max(batches), engine="auto")
    bare = load_model(path, device=device, max_batch=max(batches), engine="ort")
    ort_run = bare._ort  # the bare session call on the batch-repaired graph (None: not usable)
    model.set_normalization([MEAN], [STD])  # the path a spec with `normalize` takes
    module = model.module
    rows = {}
    for b in batches:
        x = torch.rand((b,) + tuple(model.input_shape))
        xd = x.to(device)
        arr = x.numpy()

        def raw_torch():
            with torch.inference_mode():
                module((xd - MEAN) / STD).cpu()

        def raw_ort():
            ort_run((arr - MEAN) / STD)

        def ours():
            model(x)
        fns = [raw_torch, ours] + ([raw_ort] if ort_run is not None else [])
        times = paired_best_times(fns, repeat=5, min_seconds=0.15)
        rows[b] = [b / t for t in times] + ([0.0] if ort_run is None else [])
    best = lambda k: max(rows, key=lambda b: rows[b][k])  # noqa: E731
    bt, bn, bo = best(0), best(1), best(2)
    t_rate, n_rate, o_rate = rows[bt][0], rows[bn][1], rows[bo][2]
    return {"batching": model.batching, "engine": model.engine, "torch": (t_rate, bt), "ort": (o_rate, bo),
            "nnspec": (n_rate, bn), "ratio": n_rate / max(t_rate, o_rate)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads for both backends (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    np.random.seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    print("| network | batching | torch (inputs/s @ batch) | onnxruntime (inputs/s @ batch) | nnspec (engine) "
          "| nnspec / best |")
    print("|---|---|---|---|---|---|")
    for name, path in networks():
        r = measure(path, args.device)
        t, o, n = r["torch"], r["ort"], r["nnspec"]
        print(f"| {name} | {r['batching']} | {t[0]:,.0f} @ {t[1]} | {o[0]:,.0f} @ {o[1]} | {n[0]:,.0f} @ {n[1]} "
              f"({r['engine']}) | {r['ratio']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
