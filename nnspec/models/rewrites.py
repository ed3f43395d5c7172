"""Rewrites of an ONNX graph before onnx2torch converts it, each one that a model's outputs do not
see: an opset upgrade (or a downgrade, checked, for newer opsets than onnx2torch converts),
``auto_pad`` written as explicit pads, a symbolic batch dimension (with the leading 1 of constant
Reshape shapes turned into 0, "copy the batch size"), ``W @ x`` on a vector turned into
``x @ W^T``, and Reshape shapes computed from the input's shape folded into constants.
``nnspec.models.loading`` applies them and checks the result against the original graph."""

from __future__ import annotations

from pathlib import Path

from nnspec.errors import ModelError

MIN_OPSET = 13
CONVERTED_OPSET = 17  # what a graph of a newer opset that onnx2torch cannot convert is taken down to


def upgrade_opset(proto, path: Path):
    from onnx import version_converter

    opset = _opset(proto)
    if opset >= MIN_OPSET:
        return proto
    try:
        return version_converter.convert_version(proto, MIN_OPSET)
    except Exception as err:
        raise ModelError(f"{path}: opset {opset} could not be upgraded to {MIN_OPSET} ({err})") from None


_PADDED = ("Conv", "MaxPool", "AveragePool", "LpPool")


def explicit_pads(proto, path: Path):
    """A copy in which ``auto_pad`` SAME_UPPER / SAME_LOWER / VALID (which onnx2torch does not
    convert) is written as the explicit ``pads`` that ONNX defines for it: output size
    ceil(in / stride), total padding (out - 1) * stride + (k - 1) * dilation + 1 - in, the odd
    pixel at the end (UPPER) or the start (LOWER). Needs the spatial sizes, from shape inference."""
    import onnx
    from onnx import helper

    nodes = [n for n in proto.graph.node if n.op_type in _PADDED and any(
        a.name == "auto_pad" and a.s not in (b"NOTSET", b"") for a in n.attribute)]
    if not nodes:
        return proto
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception as err:
        raise ModelError(f"{path}: shape inference failed while resolving auto_pad ({err})") from None
    shapes = inferred_dims(inferred.graph)
    inits = {i.name: list(i.dims) for i in proto.graph.initializer}
    for node in proto.graph.node:
        attrs = {a.name: a for a in node.attribute}
        mode = attrs["auto_pad"].s.decode() if "auto_pad" in attrs else "NOTSET"
        if node.op_type not in _PADDED or mode in ("NOTSET", ""):
            continue
        name = node.name or node.output[0]
        spatial = shapes.get(node.input[0], [])[2:]
        if "kernel_shape" in attrs:
            kernel = list(attrs["kernel_shape"].ints)
        elif node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in inits:
            kernel = inits[node.input[1]][2:]
        else:
            kernel = []
        if not spatial or not all(spatial) or len(kernel) != len(spatial):
            raise ModelError(f"{path}: {node.op_type} node '{name}' uses auto_pad={mode} but its input's spatial "
                             "size is unknown; export the model with explicit pads")
        strides = list(attrs["strides"].ints) if "strides" in attrs else [1] * len(spatial)
        dilations = list(attrs["dilations"].ints) if "dilations" in attrs else [1] * len(spatial)
        begins, ends = [], []
        for size, k, st, dl in zip(spatial, kernel, strides, dilations):
            if mode == "VALID":
                total = 0
            else:
                out = -(-size // st)
                total = max((out - 1) * st + (k - 1) * dl + 1 - size, 0)
            small, big = total // 2, total - total // 2
            begins.append(small if mode != "SAME_LOWER" else big)
            ends.append(big if mode != "SAME_LOWER" else small)
        keep = [a for a in node.attribute if a.name not in ("auto_pad", "pads")]
        del node.attribute[:]
        node.attribute.extend(keep + [helper.make_attribute("pads", begins + ends)])
    return proto


def real_inputs(proto):
    initializers = {i.name for i in proto.graph.initializer}
    return [i for i in proto.graph.input if i.name not in initializers]


def make_batchable(proto, prepend: bool = False):
    """A copy whose batch dimension is symbolic (prepended when the graph has none) and whose
    constant Reshape shapes copy it."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    graph = proto.graph
    if prepend:  # (on the shapes as given, before the batch dimension goes in)
        vectors_on_the_right(proto)
    for value in list(real_inputs(proto)) + list(graph.output):
        shape = value.type.tensor_type.shape
        if not shape.dim:  # an output of unstated shape (valid ONNX): nothing to rewrite
            continue
        if prepend:
            old = [onnx.TensorShapeProto.Dimension() for _ in shape.dim]
            for a, b in zip(old, shape.dim):
                a.CopyFrom(b)
            del shape.dim[:]
            shape.dim.add()
            for d in old:
                shape.dim.add().CopyFrom(d)
        dim0 = shape.dim[0]
        dim0.Clear()
        dim0.dim_param = "N"
    del graph.value_info[:]  # stale shapes that still say batch 1
    shapes = {init.name: init for init in graph.initializer}
    constants = {node.output[0]: node for node in graph.node if node.op_type == "Constant"}
    for node in graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2:
            continue
        name = node.input[1]
        if name in shapes:
            arr = numpy_helper.to_array(shapes[name]).copy()
            if arr.ndim == 1 and arr.size > 1 and arr[0] == 1:
                arr[0] = 0
                shapes[name].CopyFrom(numpy_helper.from_array(arr, name))
        elif name in constants:
            attr = constants[name].attribute[0]
            arr = numpy_helper.to_array(attr.t).copy()
            if arr.ndim == 1 and arr.size > 1 and arr[0] == 1:
                arr[0] = 0
                attr.t.CopyFrom(numpy_helper.from_array(arr, attr.t.name))
    return proto


def inferred_dims(graph) -> dict[str, list[int]]:
    """Each value's dimensions after onnx's shape inference (0 where a dimension is not fixed),
    for the values whose shape it found."""
    return {v.name: [d.dim_value if d.HasField("dim_value") else 0 for d in v.type.tensor_type.shape.dim]
            for v in list(graph.value_info) + list(graph.input) + list(graph.output)
            if v.type.tensor_type.HasField("shape")}


def vectors_on_the_right(proto) -> None:
    """In place, for a graph whose one sample is a vector (no batch dimension): each ``W @ x``
    with W a constant matrix and x a vector becomes ``x @ W^T``, the same vector, and the form
    that a prepended batch dimension leaves valid ((N, n) @ (n, m) is N rows of the original;
    W @ x on (N, n) is not defined). VNN-COMP's test_small and test_tiny are written this way."""
    import onnx
    from onnx import numpy_helper

    graph = proto.graph
    try:
        inferred = onnx.shape_inference.infer_shapes(proto).graph
    except Exception:  # noqa: BLE001 - without shapes nothing is rewritten
        return
    ranks = {name: len(dims) for name, dims in inferred_dims(inferred).items()}
    weights = {init.name: init for init in graph.initializer}
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[0] not in weights or node.input[1] in weights:
            continue
        matrix = numpy_helper.to_array(weights[node.input[0]])
        if matrix.ndim != 2 or ranks.get(node.input[1]) != 1:
            continue
        name = f"{node.input[0]}__transposed"
        if name not in weights:
            weights[name] = numpy_helper.from_array(matrix.T.copy(), name)
            graph.initializer.append(weights[name])
        node.input[0], node.input[1] = node.input[1], name


def downgrade_opset(proto):
    """A copy at opset CONVERTED_OPSET of a graph of a newer one (torch.onnx.export writes 18-20,
    where onnx2torch lacks some operators' newer versions, AveragePool's 19 among them), by onnx's
    version converter, used only where onnxruntime gives the same outputs for it on random inputs;
    else the graph itself."""
    import numpy as np
    from onnx import version_converter

    opset = _opset(proto)
    inputs = real_inputs(proto)
    if opset <= CONVERTED_OPSET or len(inputs) != 1:
        return proto
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1
            for d in inputs[0].type.tensor_type.shape.dim]
    try:
        older = version_converter.convert_version(proto, CONVERTED_OPSET)
        before, after = _session(proto), _session(older)
        rng = np.random.default_rng(0)
        for _ in range(2):
            x = rng.random(dims).astype(np.float32)
            if not _close(before.run(None, {inputs[0].name: x}), after.run(None, {inputs[0].name: x})):
                return proto
    except Exception:  # noqa: BLE001 - no adapter for some operator, or a graph onnxruntime cannot run
        return proto
    return older


def constant_reshapes(proto):
    """A copy in which each Reshape whose shape is computed from tensors' shapes (PyTorch exports
    ``x.view(x.size(0), -1)`` as Shape -> Gather -> Unsqueeze -> Concat -> Reshape) takes a constant
    shape instead, and the shape arithmetic left unused is dropped. The shapes are evaluated by
    onnxruntime at two batch sizes (and two inputs): an entry equal at both stays, the first entry
    following the batch size becomes 0 ("copy the input's first dimension"). Unchanged where any
    shape does not fit that, or where onnxruntime cannot run the graph; the rewritten graph's
    outputs are compared with the original's before it is used."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    graph = proto.graph
    constants = {i.name for i in graph.initializer} | {n.output[0] for n in graph.node if n.op_type == "Constant"}
    computed = [n for n in graph.node if n.op_type == "Reshape" and len(n.input) > 1 and n.input[1] not in constants]
    inputs = real_inputs(proto)
    if not computed or len(inputs) != 1:
        return proto
    dims = [d.dim_value if d.HasField("dim_value") else 0 for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) < 2 or any(d <= 0 for d in dims[1:]):
        return proto
    probe = onnx.ModelProto.FromString(proto.SerializeToString())
    names = sorted({n.input[1] for n in computed})
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.INT64, None) for name in names)
    batches = [dims[0]] if dims[0] > 0 else [1, 2]
    rng = np.random.default_rng(0)
    runs = []
    try:
        session = _session(probe)
        for batch in batches:
            for _ in range(2):
                x = rng.random([batch] + dims[1:]).astype(np.float32)
                runs.append((batch, x, session.run(None, {inputs[0].name: x})))
    except Exception:  # noqa: BLE001 - a graph onnxruntime cannot run keeps its computed shapes
        return proto
    n_out = len(graph.output)
    folded = {}
    for k, name in enumerate(names):
        values = [np.asarray(out[n_out + k]).reshape(-1) for _, _, out in runs]
        first = values[0]
        if any(v.shape != first.shape for v in values):
            return proto
        shape = first.copy()
        for i in range(len(shape)):
            column = {(b, int(v[i])) for (b, _, _), v in zip(runs, values)}
            if len({c for _, c in column}) == 1:
                continue
            if i == 0 and all(b == c for b, c in column):  # follows the batch size
                shape[0] = 0
            else:
                return proto
        if len(batches) == 1 and shape[0] == batches[0]:
            shape[0] = 0  # (a fixed batch: the batch-dimension rewrite would turn a leading 1 into 0 anyway)
        folded[name] = shape.astype(np.int64)
    out = onnx.ModelProto.FromString(proto.SerializeToString())
    for node in out.graph.node:
        if node.op_type == "Reshape" and len(node.input) > 1 and node.input[1] in folded:
            constant = f"{node.input[1]}__folded"
            if constant not in {i.name for i in out.graph.initializer}:
                out.graph.initializer.append(numpy_helper.from_array(folded[node.input[1]], constant))
            node.input[1] = constant
    _drop_unused(out.graph)
    try:
        rewritten = _session(out)
        for _, x, before in runs:
            if not _close(before[:n_out], rewritten.run(None, {inputs[0].name: x})):
                return proto
    except Exception:  # noqa: BLE001
        return proto
    return out


def _opset(proto) -> int:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), MIN_OPSET)


def _close(first, second) -> bool:
    """Whether two onnxruntime runs gave the same outputs (float32 round-off apart)."""
    import numpy as np

    return all(a.shape == b.shape and np.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(first, second))


def _session(proto):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _drop_unused(graph) -> None:
    """In place: nodes none of whose outputs reach the graph's outputs, and initializers no node reads."""
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(list(graph.node)):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    keep.reverse()
    del graph.node[:]
    graph.node.extend(keep)
    unused = {i.name for i in graph.initializer if i.name not in needed}
    for init in [i for i in graph.initializer if i.name in unused]:
        graph.initializer.remove(init)
    for value in [v for v in graph.input if v.name in unused]:  # (listed as inputs before IR version 4)
        graph.input.remove(value)
