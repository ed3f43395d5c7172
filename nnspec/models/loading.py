"""Loading networks: ONNX (through onnx2torch), TorchScript / torch.export archives, nn.Module.

Real ONNX files are messy: a fixed batch size of 1, ``Reshape`` to a hard-coded ``[1, ...]`` or to
a shape computed from the input's, opsets older or newer than onnx2torch converts. ``load_onnx``
repairs what it safely can (``nnspec.models.rewrites``: opset upgrade, or down where a newer one
does not convert, explicit pads, symbolic batch dimension, leading 1 of constant Reshape shapes
turned into 0 = "copy the batch size", computed Reshape shapes folded), checks that a batch of
inputs gives the same outputs as one input at a time, and falls back to ``torch.vmap``, then to a
per-input loop, only when the rewritten graph does not batch, saying so in ``Model.batching``
(native | rewritten | vmap | loop).
Nothing is ever unpickled from a file.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from pathlib import Path

import torch
from torch import nn

from nnspec.errors import ModelError
from nnspec.files import sha256_of  # noqa: F401  (re-exported: callers name it here)
from nnspec.models import newer_versions
from nnspec.models.model import Model
from nnspec.models.rewrites import (constant_reshapes, downgrade_opset, explicit_pads, make_batchable, real_inputs,
                                    upgrade_opset)

def load_model(path: str | Path, *, input_shape: tuple[int, ...] | None = None, device: str = "cpu",
               dtype: torch.dtype = torch.float32, max_batch: int = 4096, engine: str = "torch") -> Model:
    """``engine`` (ONNX files): where forward values are computed: ``torch`` (the converted
    module), ``ort`` (onnxruntime on the same batch-repaired graph) or ``auto`` (onnxruntime where it runs
    the graph and agrees with the converted module, else torch). Gradients and bounds always use the torch module."""
    path = Path(path)
    try:
        found = path.is_file()
    except OSError as err:  # e.g. a name longer than the file system allows
        raise ModelError(f"{path}: cannot open the model file ({err.strerror})") from None
    if not found:
        raise ModelError(f"{path}: model file not found")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return load_onnx(path, device=device, dtype=dtype, max_batch=max_batch, engine=engine)
    if suffix in (".pt", ".pt2", ".ts"):
        return load_torch_archive(path, input_shape, device=device, dtype=dtype, max_batch=max_batch)
    raise ModelError(f"{path}: unknown model format '{suffix}' (use .onnx, .pt (TorchScript) or .pt2 (torch.export))")


def from_module(module: nn.Module, input_shape: tuple[int, ...], *, name: str = "module",
                device: str = "cpu", dtype: torch.dtype = torch.float32, max_batch: int = 4096) -> Model:
    """Wrap a plain nn.Module (Python API). Note: like ``nn.Module.to``, this converts the module
    itself to ``dtype`` and ``device``."""
    module = module.to(device=device, dtype=dtype)
    n_out = _output_count(module, input_shape, dtype)
    return Model(module, input_shape, n_out, name=name, device=device, dtype=dtype, max_batch=max_batch)


# ---------------------------------------------------------------------- ONNX


def load_onnx(path: Path, *, device: str = "cpu", dtype: torch.dtype = torch.float32,
              max_batch: int = 4096, engine: str = "torch") -> Model:
    import onnx

    try:
        proto = onnx.load(str(path))
    except Exception as err:  # onnx raises DecodeError and others for corrupt files
        raise ModelError(f"{path}: not a readable ONNX file ({type(err).__name__}: {err})") from None
    proto = upgrade_opset(proto, path)
    inputs = real_inputs(proto)
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs) or "none"
        raise ModelError(f"{path}: nnspec needs a network with exactly one input, this one has: {names}")
    dims = [d.dim_value if d.HasField("dim_value") else 0 for d in inputs[0].type.tensor_type.shape.dim]
    # A rank-1 input of fixed size is a single sample with no batch dimension (VNN-COMP's test
    # nets): nnspec prepends one. Otherwise the first dimension is the batch.
    unbatched = len(dims) == 1 and dims[0] > 0
    if not unbatched and (len(dims) < 2 or any(d <= 0 for d in dims[1:])):
        raise ModelError(f"{path}: input '{inputs[0].name}' has shape {dims}; nnspec needs fixed sizes "
                         "after the batch dimension")
    input_shape = tuple(dims) if unbatched else tuple(dims[1:])
    operators = dict(Counter(node.op_type for node in proto.graph.node))
    proto = constant_reshapes(explicit_pads(proto, path))
    fixed_batch = unbatched or dims[0] > 0
    try:
        original = _convert(proto, path)
    except ModelError:  # a newer opset than onnx2torch converts: onnx's converter may take it down
        older = downgrade_opset(proto)
        if older is proto:
            raise
        proto = older
        original = _convert(proto, path)
    batch_proto = make_batchable(proto, prepend=unbatched) if fixed_batch else proto
    batched = _convert(batch_proto, path) if fixed_batch else original
    batching = "rewritten" if fixed_batch else "native"
    single = _Unbatched(original) if unbatched else original
    if not _batches_correctly(batched, single, input_shape):
        batched, batching = _VMapped(original, unbatched), "vmap"
        if not _batches_correctly(batched, single, input_shape):
            batched, batching = _PerInputLoop(single), "loop"
    n_out = _output_count(batched, input_shape, torch.float32)
    model = Model(batched, input_shape, n_out, name=path.name, sha256=sha256_of(path), device=device,
                  dtype=dtype, max_batch=max_batch, batching=batching, operators=operators)
    model.source = str(path)
    if engine != "torch":
        _attach_ort(model, batch_proto, engine, path)
    return model


def _attach_ort(model: Model, proto, engine: str, path: Path) -> None:
    """onnxruntime as the forward engine, on the batch-repaired graph: only where it batches, its
    outputs agree with the torch module on a random batch. Otherwise the model stays on torch,
    and says why."""
    if model.device != "cpu" or model.dtype != torch.float32 or model.batching not in ("native", "rewritten"):
        why = "the graph only batches through vmap or a loop" if model.batching not in ("native", "rewritten") \
            else f"{model.device} / {str(model.dtype).replace('torch.', '')} evaluation"
        model.use_ort(None, note=f"onnxruntime not used: {why}")
        return
    try:
        import numpy as np
        import onnxruntime as ort

        gen = torch.Generator().manual_seed(0)
        probe = torch.rand((64,) + tuple(model.input_shape), generator=gen)
        per_input = math.inf
        with torch.inference_mode():
            for _ in range(2):  # (the first call of a module pays its warm-up)
                started = time.perf_counter()
                ref = model._forward(probe).float()
                per_input = min(per_input, (time.perf_counter() - started) / 64)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.intra_op_num_threads = max(1, torch.get_num_threads())
        opts.inter_op_num_threads = 1
        if per_input >= _SPIN_STOP_ABOVE:
            # onnxruntime's workers spin for a while after each call, waiting for the next one:
            # that saves a wake-up when short calls come back to back, but a search follows each
            # call with its own work, which the spinning threads slow down (the DeepGame CNN:
            # the distances after each call took 3x as long). Where a call is long anyway, they
            # stop at its end; small networks keep the spin (their calls are short and frequent)
            opts.add_session_config_entry("session.force_spinning_stop", "1")
        session = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def run(arr):
            return np.asarray(session.run(None, {name: arr})[0])

        got = torch.from_numpy(run(probe.numpy()).reshape(64, -1))
        if got.shape != ref.shape or not torch.allclose(got, ref, atol=1e-4, rtol=1e-4):
            model.use_ort(None, note="onnxruntime not used: its outputs differ from the converted model's")
            return
    except Exception as err:  # onnxruntime missing or unable to run this graph: torch it is
        model.use_ort(None, note=f"onnxruntime not used: {type(err).__name__}: {str(err).splitlines()[0][:120]}")
        return
    # auto picks onnxruntime whenever it is usable: a fixed rule, so that a spec gives the same
    # results on every machine and under any load (a timed calibration did not); bench/throughput.py
    # measures both engines on the bundled and VNN-COMP networks.
    model.use_ort(run, note="onnxruntime" + (" (--engine ort)" if engine == "ort" else
                                             " (auto: it runs this graph and agrees with the converted module)"))


# seconds per input (torch, on the probe batch) from which onnxruntime's workers stop spinning at
# the end of each call: the DeepGame CNN (~250 us) stops, the demo nets, ACAS Xu, mnist_fc and
# oval21 (<= 10 us) keep spinning
_SPIN_STOP_ABOVE = 50e-6


def _onnx2torch():
    """onnx2torch, imported without importing torchvision up front.

    onnx2torch's converter package imports torchvision (for its NMS and RoiAlign converters) as it
    loads: 2.8 s of a 5 s ``nnspec check`` on a small MLP. While onnx2torch loads, ``torchvision``
    and ``torchvision.ops`` are stand-ins whose four functions import the real torchvision on first
    call; the stand-ins leave ``sys.modules`` as soon as onnx2torch has loaded, so any later
    ``import torchvision`` (nnspec's or the user's) gets the real package.
    """
    import sys

    if "onnx2torch" in sys.modules or "torchvision" in sys.modules:
        import onnx2torch

        newer_versions.register()
        return onnx2torch
    import importlib
    import types

    stand_in, ops = types.ModuleType("torchvision"), types.ModuleType("torchvision.ops")
    stand_in.ops = ops

    def lazy(name):
        def call(*args, **kwargs):
            return getattr(importlib.import_module("torchvision.ops"), name)(*args, **kwargs)
        call.__name__ = name
        return call

    for name in ("nms", "batched_nms", "box_convert", "roi_align"):
        setattr(ops, name, lazy(name))
    sys.modules["torchvision"], sys.modules["torchvision.ops"] = stand_in, ops
    try:
        import onnx2torch
    finally:
        for key in ("torchvision", "torchvision.ops"):
            if sys.modules.get(key) in (stand_in, ops):
                del sys.modules[key]
    newer_versions.register()
    return onnx2torch


def _convert(proto, path: Path) -> nn.Module:
    convert = _onnx2torch().convert

    try:
        return convert(proto).eval()
    except NotImplementedError as err:
        text = str(err)
        op = re.search(r"operation_type='([^']+)'", text)
        version = re.search(r"version=(\d+)", text)
        node = _node_of(proto, op.group(1)) if op else None
        what = f"operator {op.group(1)}" + (f" (opset {version.group(1)})" if version else "") if op else text
        where = f" at node '{node}'" if node else ""
        raise ModelError(f"{path}: onnx2torch cannot convert {what}{where}") from None
    except Exception as err:
        node = _node_mentioned(proto, str(err))
        where = f" at {node}" if node else ""
        raise ModelError(f"{path}: onnx2torch cannot convert the graph{where} ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else 'no message'}); re-export the model "
                         "without that construct, or report it with the model attached") from None


def _node_mentioned(proto, message: str) -> str | None:
    """The first node (op type and name) whose op type or attribute values the error message
    quotes: onnx2torch's own errors often name neither."""
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]+", message))
    for node in proto.graph.node:
        values = {a.s.decode(errors="replace") for a in node.attribute if a.s}
        if node.op_type in words or values & words:
            return f"{node.op_type} node '{node.name or node.output[0]}'"
    return None


def _node_of(proto, op_type: str) -> str | None:
    node = next((n for n in proto.graph.node if n.op_type == op_type), None)
    return (node.name or (node.output[0] if node.output else None)) if node else None


def _batches_correctly(batched: nn.Module, single: nn.Module, input_shape, count: int = 3) -> bool:
    x = torch.rand((count,) + tuple(input_shape), generator=torch.Generator().manual_seed(0))
    try:
        with torch.inference_mode():
            together = batched(x)
            apart = torch.cat([single(x[i:i + 1]).reshape(1, -1) for i in range(count)])
        return together.reshape(count, -1).shape == apart.shape and torch.allclose(
            together.reshape(count, -1), apart, atol=1e-5, rtol=1e-4)
    except Exception:
        return False


class _Unbatched(nn.Module):
    """The original graph of a batch-less network, called on (1, *shape) inputs."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.inner = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.reshape(x.shape[1:])).reshape(1, -1)


class _VMapped(nn.Module):
    """torch.vmap over the single-sample graph: batched evaluation for graphs that cannot take a
    batch dimension themselves (e.g. ``W @ x`` with x a column)."""

    def __init__(self, module: nn.Module, unbatched: bool):
        super().__init__()
        self.inner, self.unbatched = module, unbatched

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.unbatched:
            return torch.vmap(lambda v: self.inner(v).reshape(-1))(x)
        return torch.vmap(lambda v: self.inner(v[None]).reshape(-1))(x)


class _PerInputLoop(nn.Module):
    """Last resort for graphs that will not batch: one forward per input."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.inner = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.inner(x[i:i + 1]).reshape(1, -1) for i in range(x.shape[0])])


def _output_count(module: nn.Module, input_shape, dtype) -> int:
    with torch.inference_mode():
        out = module(torch.zeros((1,) + tuple(input_shape), dtype=dtype))
    if isinstance(out, (tuple, list)):
        out = out[0]
    return int(out.numel())


# ---------------------------------------------------------------------- torch archives


def load_torch_archive(path: Path, input_shape, *, device: str, dtype, max_batch: int) -> Model:
    if input_shape is None:
        raise ModelError(f"{path}: a TorchScript/torch.export archive does not state its input shape; "
                         "nnspec takes it from the spec's inputs")
    try:
        if path.suffix.lower() == ".pt2":
            module = torch.export.load(str(path)).module()
        else:
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as err:
        raise ModelError(f"{path}: cannot load ({type(err).__name__}: {err}); nnspec loads TorchScript "
                         ".pt and torch.export .pt2 archives, never pickled objects") from None
    n_out = _output_count(module, input_shape, torch.float32)
    return Model(module, tuple(input_shape), n_out, name=path.name, sha256=sha256_of(path),
                 device=device, dtype=dtype, max_batch=max_batch)
