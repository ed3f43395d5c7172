"""``Model``: evaluate a network on batches of inputs in the declared input space, and count.

Every query goes through ``__call__``: inputs ``(B, *input_shape)`` in the spec's input space
(before normalisation), outputs ``(B, m)``. The model chunks (to at most ``max_batch``, sized by activations on the first call), applies the
normalisation, runs under ``torch.inference_mode()``, checks that outputs are finite, counts
``queries`` (inputs evaluated) and ``calls``, and enforces query and time budgets.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn

from nnspec.errors import BudgetExhausted, ModelError


_PROBE = 64  # inputs evaluated with hooks on the first call
_CHUNK_BYTES = 16 * 2**20  # activations per chunk on a CPU


@dataclass
class Budget:
    """A per-task view: the model raises BudgetExhausted past these limits (0 = none)."""

    max_queries: int = 0
    max_seconds: float = 0.0
    started: float = field(default_factory=time.perf_counter)
    queries: int = 0


class Model:
    def __init__(self, module: nn.Module, input_shape: tuple[int, ...], n_outputs: int, *,
                 name: str = "model", sha256: str = "", device: str = "cpu",
                 dtype: torch.dtype = torch.float32, max_batch: int = 4096, batching: str = "native",
                 operators: dict[str, int] | None = None):
        module = module.to(device=device, dtype=dtype)
        try:
            module = module.eval()
        except NotImplementedError:  # torch.export modules are already in inference form
            pass
        self.module = module
        self.input_shape = tuple(input_shape)
        self.n_outputs = n_outputs
        self.name, self.sha256, self.device, self.dtype = name, sha256, device, dtype
        self.max_batch = max_batch
        # the chunk size is tuned once, on the first call: big batches of a conv net run slower
        # per input on a CPU (caches) than a few dozen do
        self.tuned_chunk: int | None = None  # None: not tuned yet (chunks of max_batch)
        self._tuned = False
        self.batching = batching  # native | rewritten | loop
        self.operators = operators or {}
        self.queries = 0
        self.calls = 0
        self.seconds = 0.0
        self._mean: torch.Tensor | None = None
        self._std: torch.Tensor | None = None
        self._scale: torch.Tensor | float | None = None
        self._shift: torch.Tensor | float | None = None
        self.budget: Budget | None = None
        self.source: str | None = None  # the file it was loaded from, if any
        # forward values (searches, confirmation) may run on another backend: onnxruntime for ONNX
        # files (``use_ort``); gradients and bounds always run on the torch module
        self.engine = "torch"
        self.engine_note = ""
        self._ort = None  # numpy (B, *shape) float32 -> numpy (B, ...) outputs
        self._ort_chunk = 1024
        self._ort_norm = None  # the normalisation as numpy arrays (set on first use)

    # ------------------------------------------------------------------ configuration

    def set_normalization(self, mean, std) -> None:
        """Fold (x - mean) / std into the evaluation; one value per channel or one for all.

        Stored as x * scale + shift, Python floats when there is one value; the identity
        (mean 0, std 1) costs nothing at all.
        """
        shape = (-1,) + (1,) * (len(self.input_shape) - 1) if len(self.input_shape) > 1 else (-1,)
        mean_t = torch.as_tensor(mean, dtype=self.dtype, device=self.device)
        std_t = torch.as_tensor(std, dtype=self.dtype, device=self.device)
        if mean_t.numel() > 1:
            mean_t, std_t = mean_t.view(shape), std_t.view(shape)
        self._mean, self._std = mean_t, std_t
        if bool((mean_t == 0).all() and (std_t == 1).all()):
            self._scale = self._shift = None
        elif mean_t.numel() == 1 and std_t.numel() == 1:  # python floats: the cheapest broadcast
            self._scale, self._shift = 1.0 / float(std_t), -float(mean_t) / float(std_t)
        else:
            self._scale, self._shift = 1.0 / std_t, -mean_t / std_t
        self._ort_norm = None

    @property
    def n_inputs(self) -> int:
        n = 1
        for d in self.input_shape:
            n *= d
        return n

    # ------------------------------------------------------------------ evaluation

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.input_shape:
            x = x.reshape((x.shape[0],) + self.input_shape)
        b = x.shape[0]
        self._charge(b)
        start = time.perf_counter()
        if self._ort is not None:
            y, finite = self._ort_forward(x)
            return self._finish(y, b, start, finite)
        outs = []
        with torch.inference_mode():
            i = 0
            if not self._tuned and b > 0:
                i = self._tune(x, outs)
            chunk = self.max_batch if self.tuned_chunk is None else min(self.tuned_chunk, self.max_batch)
            for i in range(i, b, chunk):
                outs.append(self._forward(x[i:i + chunk]))
            y = outs[0] if len(outs) == 1 else torch.cat(outs) if outs else torch.empty(0, self.n_outputs)
        return self._finish(y.cpu(), b, start)

    def _finish(self, y: torch.Tensor, b: int, start: float, finite: bool | None = None) -> torch.Tensor:
        # a finite sum means every output is finite; only an inf/nan sum (or an overflow of the
        # sum itself) needs the exact check
        if finite is None:
            finite = bool(torch.isfinite(y.sum())) or bool(torch.isfinite(y).all())
        self.calls += 1
        self.seconds += time.perf_counter() - start
        if not finite:
            first = int((~torch.isfinite(y).all(dim=1)).nonzero()[0])
            raise ModelError(f"{self.name}: non-finite output for input {first} of a batch of {b}")
        return y

    def use_ort(self, run, chunk: int | None = None, note: str = "") -> None:
        """Evaluate forward values with ``run`` (numpy float32 (B, *input_shape), the model's own
        input space after normalisation -> outputs), in chunks of ``chunk``; ``None``: torch.
        The default chunk is the model's ``max_batch``, held to 64 MB of input per call: one call
        per batch is what onnxruntime is fastest at (4 calls of 1,024 cost tiny ACAS Xu nets 10%)."""
        if chunk is None:
            chunk = min(self.max_batch, max(16, (64 << 20) // (4 * max(1, self.n_inputs))))
        self._ort, self._ort_chunk = run, max(1, int(chunk))
        self.engine = "torch" if run is None else "ort"
        self.engine_note = note

    def _ort_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """Outputs on onnxruntime, and whether they are all finite (checked in numpy too)."""
        import numpy as np

        # numpy, not torch, for the normalisation: a torch op here wakes torch's thread pool, whose
        # threads then spin beside onnxruntime's own and slowed small networks 3-6x
        arr = x.detach().to(dtype=torch.float32, device="cpu").contiguous().numpy()
        if self._scale is not None:
            if self._ort_norm is None:
                scale, shift = self._scale, self._shift
                if isinstance(scale, torch.Tensor):
                    scale, shift = scale.detach().cpu().float().numpy(), shift.detach().cpu().float().numpy()
                self._ort_norm = (np.float32(scale) if np.isscalar(scale) else scale,
                                  np.float32(shift) if np.isscalar(shift) else shift)
            scale, shift = self._ort_norm
            arr = arr * scale + shift
        chunk = self._ort_chunk
        outs = [self._ort(arr[i:i + chunk]) for i in range(0, arr.shape[0], chunk)]
        y = outs[0] if len(outs) == 1 else np.concatenate(outs) if outs else np.empty((0, self.n_outputs), np.float32)
        y = np.ascontiguousarray(y).reshape(arr.shape[0], -1)
        with np.errstate(over="ignore", invalid="ignore"):
            finite = bool(np.isfinite(y.sum())) or bool(np.isfinite(y).all())
        out = torch.from_numpy(y)
        return (out if self.dtype == torch.float32 else out.to(self.dtype)), finite

    def forward_grad(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs (B, m) with autograd's graph, for gradient-guided searches: counted and budgeted
        like ``__call__`` (a forward-and-backward pass counts as one query per input)."""
        if tuple(x.shape[1:]) != self.input_shape:
            x = x.reshape((x.shape[0],) + self.input_shape)
        self._charge(x.shape[0])
        start = time.perf_counter()
        with torch.enable_grad():
            y = self._forward(x).cpu()  # differentiable across devices, like __call__'s outputs
        self.calls += 1
        self.seconds += time.perf_counter() - start
        return y

    def _forward(self, chunk: torch.Tensor) -> torch.Tensor:
        chunk = chunk.to(device=self.device, dtype=self.dtype)
        if self._scale is not None:
            chunk = chunk * self._scale + self._shift
        out = self.module(chunk)
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out.reshape(chunk.shape[0], -1)

    def _tune(self, x: torch.Tensor, outs: list) -> int:
        """Choose the chunk size from the network's activation footprint, measured with forward
        hooks while the first inputs of the first call are evaluated (real work: no extra queries).
        On a CPU a chunk whose activations outgrow the caches runs slower per input (the DeepGame
        CNN: 4,600 inputs/s in chunks of 64, 2,400 in chunks of 1,024), so chunks hold about
        ``_CHUNK_BYTES`` of activations; on a GPU the chunk stays at ``max_batch``."""
        first = min(x.shape[0], _PROBE)
        sizes: list[int] = []
        leaves = [m for m in self.module.modules() if not any(True for _ in m.children())]
        hooks = []
        try:
            for m in leaves:
                hooks.append(m.register_forward_hook(lambda _m, _i, out: sizes.append(
                    out.numel() * out.element_size() if isinstance(out, torch.Tensor) else 0)))
        except RuntimeError:  # TorchScript modules take no hooks: keep max_batch
            for h in hooks:
                h.remove()
            hooks = None
        try:
            outs.append(self._forward(x[:first]))
        finally:
            for h in hooks or ():
                h.remove()
        if hooks is None:
            sizes.clear()
        self._tuned = True
        if self.device == "cpu" and sizes:
            per_input = max(sum(sizes) / first, 1.0)
            self.tuned_chunk = int(min(self.max_batch, max(_PROBE, _CHUNK_BYTES // per_input)))
        return first

    def _charge(self, b: int) -> None:
        budget = self.budget
        if budget is not None:
            if budget.max_queries and budget.queries + b > budget.max_queries:
                raise BudgetExhausted("query")
            if budget.max_seconds and time.perf_counter() - budget.started > budget.max_seconds:
                raise BudgetExhausted("time")
            budget.queries += b
        self.queries += b

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self(x).argmax(dim=1)

    def describe(self) -> dict:
        return {"name": self.name, "sha256": self.sha256, "input_shape": list(self.input_shape),
                "outputs": self.n_outputs, "batching": self.batching, "device": self.device,
                "dtype": str(self.dtype).replace("torch.", ""), "engine": self.engine,
                **({"engine_note": self.engine_note} if self.engine_note else {})}


def label_score(model: Model, shape: tuple[int, ...], label: int):
    """points (B, n) as numpy -> the model's output for ``label`` (one batched call); the score
    that saliency partitions rank dimensions by."""
    def score(points):
        out = model(torch.from_numpy(points).to(model.dtype).reshape((len(points),) + tuple(shape)))
        return out[:, label].to(torch.float64).numpy()
    return score
