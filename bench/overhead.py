"""Benchmark 4 (issue 4): the solver's overhead, the fraction of wall time spent outside the
model's forward (target < 10%), for a whole `mads` quantification of several inputs at once;
and, apart, the time of the sound lower bound by interval bound propagation (`ibp=true`, the
default), which is arithmetic on the weights rather than model queries.

    python bench/overhead.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import ROOT, data_root  # noqa: E402
from nnspec.backends.quant import QuantBackend  # noqa: E402
from nnspec.models.loading import load_model  # noqa: E402
from nnspec.bounds import certified_radius, engine_for, margin_objectives  # noqa: E402
from tests.helpers import gap, prop, task  # noqa: E402


def cases():
    demo = np.load(ROOT / "specs/models/digits_test.npz")["x"][:20]
    yield "demo MLP", ROOT / "specs/models/digits_mlp.onnx", torch.from_numpy(demo), 2000
    yield "demo CNN", ROOT / "specs/models/digits_cnn.onnx", torch.from_numpy(demo), 2000
    root = data_root()
    if root and (root / "models/deepgame_mnist.onnx").is_file():
        from nnspec.models.inputs import read_idx

        imgs = read_idx(root / "mnist/t10k-images-idx3-ubyte.gz")[:10].astype(np.float32)[:, None] / 255.0
        yield "DeepGame MNIST CNN", root / "models/deepgame_mnist.onnx", torch.from_numpy(imgs), 1000


ENGINE = "auto"  # the CLI's default: onnxruntime for forward values where it runs the graph


def main() -> None:
    global ENGINE
    if "--engine" in sys.argv:
        ENGINE = sys.argv[sys.argv.index("--engine") + 1]
    print(f"engine {ENGINE}")
    print("| network | inputs | budget per input | wall s | model forward s | overhead | IBP s (all inputs) |")
    print("|---|---|---|---|---|---|---|")
    for name, path, x, budget in cases():
        model = load_model(path, engine=ENGINE)
        labels = model(x).argmax(1)
        model.seconds = 0.0
        t0 = time.perf_counter()
        QuantBackend().run(task(prop(gap(None), "linf", 0.05), x, labels, lower=0.0, upper=1.0, budget=budget,
                                ibp=False), model)
        wall = time.perf_counter() - t0
        t0 = time.perf_counter()
        n = x[0].numel()
        for i in range(len(x)):
            certified_radius(engine_for(model), x[i], margin_objectives(model.n_outputs, int(labels[i])), 0.0, 0.05,
                             torch.zeros(n), torch.ones(n), method="ibp")
        ibp = time.perf_counter() - t0
        print(f"| {name} | {len(x)} | {budget} | {wall:.2f} | {model.seconds:.2f} | {1 - model.seconds / wall:.1%} "
              f"| {ibp:.2f} |")


if __name__ == "__main__":
    main()
