"""Models: loading, batching of messy ONNX files, counting, errors; differential checks against
onnxruntime on the demo models, a hand-built fixed-batch file and the real networks in ../shared."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from nnspec.errors import BudgetExhausted, DataError, ModelError
from nnspec.models.crosscheck import max_difference, onnxruntime_session
from nnspec.models.inputs import fit_to_model, read_idx
from nnspec.models.loading import load_model
from nnspec.models.model import Budget
from tests.conftest import ROOT

DEMO = ROOT / "specs" / "models"


def _agrees_with_onnxruntime(path, model, lo=0.0, hi=1.0, tol=1e-4):
    n = model.n_inputs
    diff = max_difference(path, model, torch.full((n,), lo, dtype=torch.float64),
                          torch.full((n,), hi, dtype=torch.float64), count=8)
    assert diff < tol, f"{path}: max difference {diff}"


@pytest.mark.parametrize("name", ["digits_mlp.onnx", "digits_cnn.onnx"])
def test_demo_models_match_onnxruntime(name):
    model = load_model(DEMO / name)
    assert model.input_shape == (1, 8, 8) and model.n_outputs == 10 and model.batching == "native"
    _agrees_with_onnxruntime(DEMO / name, model)


def _fixed_batch_file(path):
    """batch 1 everywhere: input [1, 1, 4, 4], a Reshape to the constant [1, 16], Gemm with transB,
    Sub/Div normalisation and a Sigmoid, as exporters in the wild produce."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 16)).astype(np.float32)
    b = rng.normal(size=(3,)).astype(np.float32)
    inits = [numpy_helper.from_array(np.array([1, 16], dtype=np.int64), "shape"),
             numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B"),
             numpy_helper.from_array(np.array(0.5, dtype=np.float32), "mean"),
             numpy_helper.from_array(np.array(0.25, dtype=np.float32), "std")]
    nodes = [helper.make_node("Sub", ["x", "mean"], ["c"]), helper.make_node("Div", ["c", "std"], ["n"]),
             helper.make_node("Reshape", ["n", "shape"], ["flat"]),
             helper.make_node("Gemm", ["flat", "W", "B"], ["g"], transB=1),
             helper.make_node("Sigmoid", ["g"], ["y"])]
    graph = helper.make_graph(nodes, "fixed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return w, b


def test_fixed_batch_one_file_is_rewritten_to_batch(tmp_path):
    path = tmp_path / "fixed.onnx"
    w, b = _fixed_batch_file(path)
    model = load_model(path)
    assert model.batching == "rewritten" and model.input_shape == (1, 4, 4) and model.n_outputs == 3
    x = torch.rand(257, 1, 4, 4)
    y = model(x)
    expected = torch.sigmoid(((x - 0.5) / 0.25).reshape(257, 16) @ torch.from_numpy(w).T + torch.from_numpy(b))
    assert torch.allclose(y, expected, atol=1e-5)
    assert model.calls == 1 and model.queries == 257
    _agrees_with_onnxruntime(path, model)


def test_vector_networks_written_as_matrix_times_column_batch_and_bound(tmp_path):
    """A network whose one sample is a vector and whose layers are W @ x (VNN-COMP's test_small):
    W @ x becomes x @ W^T, so the graph batches itself (no vmap), agrees with onnxruntime, and the
    bound engine reads it; its bounds hold the exact extremes, found on a fine grid of the
    one-dimensional input."""
    rng = np.random.default_rng(3)
    W0, B0 = rng.normal(size=(5, 1)).astype(np.float32), rng.normal(size=5).astype(np.float32)
    W1, B1 = rng.normal(size=(2, 5)).astype(np.float32), rng.normal(size=2).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in [(W0, "W0"), (B0, "B0"), (W1, "W1"), (B1, "B1")]]
    nodes = [helper.make_node("MatMul", ["W0", "x"], ["m0"]), helper.make_node("Add", ["m0", "B0"], ["h0"]),
             helper.make_node("Relu", ["h0"], ["r0"]), helper.make_node("MatMul", ["W1", "r0"], ["m1"]),
             helper.make_node("Add", ["m1", "B1"], ["y"])]
    graph = helper.make_graph(nodes, "vector", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], inits)
    path = tmp_path / "vector.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), str(path))
    model = load_model(path)
    assert model.input_shape == (1,) and model.n_outputs == 2 and model.batching == "rewritten"
    assert model(torch.rand(100, 1)).shape == (100, 2) and model.calls == 1
    _agrees_with_onnxruntime(path, model, -1.0, 1.0)

    from nnspec.bounds import engine_for

    engine = engine_for(model)
    lo, hi = torch.tensor([[-1.0]], dtype=torch.float64), torch.tensor([[1.0]], dtype=torch.float64)
    out = engine.intervals(lo, hi, method="crown")[engine.graph.output]
    grid = torch.linspace(-1.0, 1.0, 20001, dtype=torch.float64)[:, None]
    h = torch.relu(grid @ torch.from_numpy(W0).double().T + torch.from_numpy(B0).double())
    exact = h @ torch.from_numpy(W1).double().T + torch.from_numpy(B1).double()
    assert (out[0][0] <= exact.min(0).values + 1e-6).all() and (out[1][0] >= exact.max(0).values - 1e-6).all()
    # and on a box of one point they are the network's value there
    point = torch.tensor([[0.3]], dtype=torch.float64)
    low, high = engine.intervals(point, point, method="crown")[engine.graph.output]
    value = model(point.float()).double()
    assert torch.allclose(low, value, atol=1e-5) and torch.allclose(high, value, atol=1e-5)


def test_counting_chunking_and_budgets():
    model = load_model(DEMO / "digits_mlp.onnx", max_batch=7)
    x = torch.rand(20, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    whole = model(x)
    assert model.queries == 20 and model.calls == 1
    model.max_batch = 4096
    assert torch.allclose(whole, model(x), atol=1e-5)  # float32 sums differ by chunk size
    model.budget = Budget(max_queries=30)
    model(x[:20])
    with pytest.raises(BudgetExhausted):
        model(x[:11])
    assert model.budget.queries == 20


def test_normalisation_is_folded_into_the_evaluation():
    model = load_model(DEMO / "digits_cnn.onnx")
    x = torch.rand(3, 1, 8, 8)
    raw = model((x - 0.2) / 0.5)
    model.set_normalization([0.2], [0.5])
    assert torch.allclose(model(x), raw, atol=1e-6)


def test_non_finite_outputs_are_an_error_naming_the_input():
    from nnspec.models.loading import from_module

    model = from_module(torch.nn.Flatten(), (2,), name="ident")
    with pytest.raises(ModelError, match="non-finite output for input 1 of a batch of 2"):
        model(torch.tensor([[0.0, 1.0], [float("inf"), 0.0]]))


@pytest.mark.parametrize("content, message", [
    (b"not an onnx file at all", "not a readable ONNX file"),
    (b"", "nnspec needs a network with exactly one input"),
])
def test_bad_model_files_give_one_line_errors(tmp_path, content, message):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelError, match=message) as info:
        load_model(path)
    assert "\n" not in str(info.value)


def test_unsupported_operator_is_named(tmp_path):
    node = helper.make_node("Hardmax", ["x"], ["y"], name="the_hardmax")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])])
    path = tmp_path / "hardmax.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), str(path))
    with pytest.raises(ModelError) as info:
        load_model(path)
    assert str(info.value) == f"{path}: onnx2torch cannot convert operator Hardmax (opset 13) at node 'the_hardmax'"


def test_missing_and_unknown_formats(tmp_path):
    with pytest.raises(ModelError, match="model file not found"):
        load_model(tmp_path / "none.onnx")
    (tmp_path / "m.h5").write_bytes(b"x")
    with pytest.raises(ModelError, match="unknown model format '.h5'"):
        load_model(tmp_path / "m.h5")


def test_torchscript_archive(tmp_path):
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    path = tmp_path / "net.pt"
    torch.jit.script(net).save(str(path))
    model = load_model(path, input_shape=(1, 2, 2))
    x = torch.rand(5, 1, 2, 2)
    assert torch.allclose(model(x), net(x), atol=1e-6)
    with pytest.raises(ModelError, match="does not state its input shape"):
        load_model(path)


def test_shapes_fit_or_fail_naming_both():
    assert fit_to_model(np.zeros((2, 8, 8)), (1, 8, 8), "a:1:1", "m").shape == (2, 1, 8, 8)
    assert fit_to_model(np.zeros((2, 64)), (1, 8, 8), "a:1:1", "m").shape == (2, 1, 8, 8)
    with pytest.raises(DataError, match=r"a:1:1: inputs have shape \(32, 32, 3\) but m expects \(3, 32, 32\) "
                                        r"\(the data looks HWC: add 'layout hwc'\)"):
        fit_to_model(np.zeros((2, 32, 32, 3)), (3, 32, 32), "a:1:1", "m")


def test_idx_reader_roundtrip(tmp_path):
    import gzip

    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in arr.shape) + arr.tobytes()
    (tmp_path / "a-idx3-ubyte").write_bytes(raw)
    with gzip.open(tmp_path / "a-idx3-ubyte.gz", "wb") as fh:
        fh.write(raw)
    assert (read_idx(tmp_path / "a-idx3-ubyte") == arr).all()
    assert (read_idx(tmp_path / "a-idx3-ubyte.gz") == arr).all()


# ------------------------------------------------------------------ real networks (skip without data)

REAL = [
    ("vnncomp2022/acasxu/onnx/ACASXU_run2a_1_1_batch_2000.onnx", -0.5, 0.5),
    ("vnncomp2022/acasxu/onnx/ACASXU_run2a_5_9_batch_2000.onnx", -0.5, 0.5),
    ("vnncomp2022/mnist_fc/onnx/mnist-net_256x2.onnx", 0.0, 1.0),
    ("vnncomp2022/mnist_fc/onnx/mnist-net_256x6.onnx", 0.0, 1.0),
    ("vnncomp2022/oval21/onnx/cifar_base_kw.onnx", 0.0, 1.0),
    ("vnncomp2022/oval21/onnx/cifar_deep_kw.onnx", 0.0, 1.0),
    ("vnncomp2022/test/test_nano.onnx", -1.0, 1.0),
    ("vnncomp2022/test/test_tiny.onnx", -1.0, 1.0),
    ("vnncomp2022/test/test_small.onnx", -1.0, 1.0),
    ("vnncomp2022/test/test_sat.onnx", -1.0, 1.0),
    ("models/deepgame_mnist.onnx", 0.0, 1.0),
]


@pytest.mark.parametrize("rel, lo, hi", REAL, ids=[r[0].split("/")[-1] for r in REAL])
def test_real_networks_load_batch_and_match_onnxruntime(data_root, rel, lo, hi):
    path = data_root / rel
    if not path.is_file():
        pytest.skip(f"{rel} not present")
    model = load_model(path)
    x = lo + (hi - lo) * torch.rand((64,) + model.input_shape)
    assert model(x).shape == (64, model.n_outputs)
    assert model.calls == 1  # one call for the whole batch: never a per-input loop on these
    assert model.batching in ("native", "rewritten")  # (test_small and test_tiny since W @ x became x @ W^T)
    ort = onnxruntime_session(path, model)
    assert float((model(x[:8]).double() - ort(x[:8])).abs().max()) < 1e-4


def test_batchnorm_residual_tanh_maxpool_graph_matches_onnxruntime(tmp_path):
    rng = np.random.default_rng(1)
    f = lambda *shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731
    inits = [numpy_helper.from_array(a, n) for a, n in [
        (f(4, 1, 3, 3), "cw"), (f(4), "cb"), (np.abs(f(4)) + 0.5, "scale"), (f(4), "bias"), (f(4), "mean"),
        (np.abs(f(4)) + 0.5, "var"), (f(3, 64), "W"), (f(3), "B")]]
    nodes = [helper.make_node("Conv", ["x", "cw", "cb"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["bn"]),
             helper.make_node("Tanh", ["bn"], ["t"]),
             helper.make_node("Add", ["t", "c"], ["res"]),  # a residual connection
             helper.make_node("MaxPool", ["res"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["flat"]),
             helper.make_node("Gemm", ["flat", "W", "B"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "bn_res", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], inits)
    path = tmp_path / "bn_res.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), str(path))
    model = load_model(path)
    assert model.batching == "rewritten" and model.operators["BatchNormalization"] == 1
    assert model(torch.rand(100, 1, 8, 8)).shape == (100, 3) and model.calls == 1
    _agrees_with_onnxruntime(path, model)


def test_image_folder_inputs(tmp_path):
    from PIL import Image

    from nnspec.models.inputs import load_input_set
    from nnspec.properties.spec import InputSetSpec, LabelSpec
    from nnspec.span import Span

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8), 60 * i, dtype=np.uint8)).save(folder / f"{i}.png")
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8) + 255).save(tmp_path / "rgb.png")
    span = Span("s.nnspec", 2, 1, 2, 9)
    spec = InputSetSpec(str(folder), None, LabelSpec("list", (1, 2, 3), span), None, None, None, None, span)
    got = load_input_set(spec)
    assert got.x.shape == (3, 1, 8, 8) and got.labels.tolist() == [1, 2, 3]
    assert got.x[2].max() == pytest.approx(120 / 255)
    rgb = load_input_set(InputSetSpec(str(tmp_path / "rgb.png"), None, LabelSpec("none", None, span),
                                      None, None, None, None, span))
    assert rgb.x.shape == (1, 3, 8, 8) and rgb.x.min() == 1.0
    with pytest.raises(DataError, match=r"s.nnspec:2:1: no image files in folder"):
        (tmp_path / "empty").mkdir()
        load_input_set(InputSetSpec(str(tmp_path / "empty"), None, LabelSpec("none", None, span), None, None,
                                    None, None, span))


def test_the_chunk_size_follows_the_activations_and_costs_no_queries():
    cnn, mlp = load_model(DEMO / "digits_cnn.onnx"), load_model(DEMO / "digits_mlp.onnx")
    x = torch.rand(1500, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    first = cnn(x)  # its first 64 inputs are evaluated with forward hooks that measure activations
    assert cnn._tuned and cnn.queries == 1500 and cnn.calls == 1  # no extra queries for tuning
    mlp(x)
    assert 64 <= cnn.tuned_chunk < mlp.tuned_chunk == mlp.max_batch  # conv activations are larger
    cnn.max_batch = 50  # a cap set later still holds
    again = cnn(x)
    assert torch.allclose(first, again, atol=1e-5)
    reference = torch.cat([cnn.module(x[i:i + 1]) for i in range(0, 1500, 97)])
    assert torch.allclose(first[::97], reference, atol=1e-5)


def test_a_network_whose_output_shape_is_not_stated_loads_and_batches(tmp_path):
    """ONNX lets a graph leave its output's shape out (shape inference fills it in later); the
    batch-dimension rewrite once indexed its first dimension and stopped with IndexError."""
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    g = helper.make_graph([helper.make_node("Gemm", ["x", "W", "b"], ["y"], transB=1)], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")])
    path = tmp_path / "no_output_shape.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), str(path))
    model = load_model(path)
    x = torch.rand(5, 4)
    assert model.batching == "rewritten" and model.n_outputs == 3
    assert torch.allclose(model(x), x @ torch.from_numpy(w).T + torch.from_numpy(b), atol=1e-5)


def _opset_graph(tmp_path, name, middle, inits, opset, ir_version=9):
    """x (N, 1, 4, 4) -> Conv -> Relu -> ``middle`` nodes (from "r" to "m") -> Flatten -> Gemm (3)."""
    import onnxruntime as ort

    rng = np.random.default_rng(2)
    conv = [numpy_helper.from_array(rng.normal(size=(2, 1, 3, 3)).astype(np.float32), "cw")]
    front = [helper.make_node("Conv", ["x", "cw"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"])]
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 4, 4])

    def save(nodes, out, more, path):
        g = helper.make_graph(nodes, name, [x_info], [out], conv + inits + more)
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version), str(path))

    save(front + middle, helper.make_tensor_value_info("m", TensorProto.FLOAT, None), [], tmp_path / "probe.onnx")
    size = ort.InferenceSession(str(tmp_path / "probe.onnx")).run(None, {"x": np.zeros((1, 1, 4, 4), np.float32)})[0].size
    head = [numpy_helper.from_array(rng.normal(size=(3, size)).astype(np.float32), "W"),
            numpy_helper.from_array(rng.normal(size=3).astype(np.float32), "b")]
    path = tmp_path / f"{name}.onnx"
    save(front + middle + [helper.make_node("Flatten", ["m"], ["f"]), helper.make_node("Gemm", ["f", "W", "b"], ["y"], transB=1)],
         helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3]), head, path)
    return path


def test_newer_versions_of_operators_that_mean_the_same_convert_as_the_older(tmp_path):
    """torch.onnx.export writes opset 18-20, where onnx2torch has no converter for Pad (18, 19),
    Reshape (19) or AveragePool (19): those versions mean the same as older ones unless their
    additions are used, and convert as the older ones; a Pad that uses its axes input is refused."""
    const = numpy_helper.from_array
    middle = [helper.make_node("Pad", ["r", "pads"], ["p"], mode="reflect"),
              helper.make_node("AveragePool", ["p"], ["a"], kernel_shape=[2, 2], strides=[2, 2]),
              helper.make_node("Reshape", ["a", "shape"], ["m"])]
    inits = [const(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads"), const(np.array([0, -1], np.int64), "shape")]
    path = _opset_graph(tmp_path, "opset20", middle, inits, 20)
    model = load_model(path)
    assert model.batching == "native"
    _agrees_with_onnxruntime(path, model)
    axes = [helper.make_node("Pad", ["r", "pads", "", "axes"], ["m"])]
    path = _opset_graph(tmp_path, "axes", axes, [const(np.array([1, 1, 1, 1], np.int64), "pads"),
                                                 const(np.array([2, 3], np.int64), "axes")], 18)
    with pytest.raises(ModelError, match=r"cannot convert operator Pad \(opset 18\)"):
        load_model(path)


def test_a_newer_opset_than_onnx2torch_converts_is_taken_down_and_checked(tmp_path):
    """ReduceMean's version 18 takes its axes as an input, which onnx2torch does not convert: such a
    graph is taken down to opset 17 by onnx's version converter (axes back to an attribute), used
    because onnxruntime gives the same outputs, and loads."""
    middle = [helper.make_node("ReduceMean", ["r", "axes"], ["m"], keepdims=1)]
    path = _opset_graph(tmp_path, "reduce18", middle, [numpy_helper.from_array(np.array([3], np.int64), "axes")], 18)
    model = load_model(path)
    assert model.batching == "native"
    _agrees_with_onnxruntime(path, model)
