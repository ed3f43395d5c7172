"""Operator rules added on 2026-12-06: PReLU, and leaky ReLUs sloped outside [0, 1], as exact ops
over ReLUs (``graph._leaky_ops``: f(x) = s x + (1 - s) relu(x), or relu(x) - s relu(-x); before,
a PReLU had no bound, and a leaky ReLU with slope 2 or -0.5 got the [0, 1] relaxation, which does
not hold there: CROWN and IBP certified bounds that sampled inputs break); ConvTranspose as an
affine op; GELU (exact, erf form), not monotone, with parallel-chord lines and its own interval."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nnspec.bounds import bab
from nnspec.bounds.engine import BoundEngine
from nnspec.bounds.graph import BoundGraph, Unsupported


def _prelu(slopes) -> nn.PReLU:
    p = nn.PReLU(len(slopes))
    p.weight.data = torch.tensor(slopes, dtype=torch.float32)
    return p


def _slopes(seed: int, low: float, high: float, n: int = 8) -> list[float]:
    return (low + (high - low) * torch.rand(n, generator=torch.Generator().manual_seed(seed))).tolist()


ACTIVATIONS = {
    "leaky 2": lambda: nn.LeakyReLU(2.0),
    "leaky -0.5": lambda: nn.LeakyReLU(-0.5),
    "prelu in [0, 1]": lambda: _prelu(_slopes(1, 0.0, 1.0)),
    "prelu in [0, 2]": lambda: _prelu(_slopes(2, 0.0, 2.0)),
    "prelu above 1": lambda: _prelu(_slopes(3, 1.0, 3.0)),
    "prelu below 0": lambda: _prelu(_slopes(4, -1.0, 0.0)),
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@pytest.mark.parametrize("method", ["ibp", "crown", "alpha", "forward+crown"])
def test_bounds_hold_at_sampled_inputs(name, method):
    for seed in range(3):
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Linear(3, 8), ACTIVATIONS[name](), nn.Linear(8, 8), ACTIVATIONS[name](),
                            nn.Linear(8, 2)).double()
        engine = BoundEngine(BoundGraph.from_module(net, (3,)))
        lo = -torch.rand(1, 3, dtype=torch.float64)
        hi = lo + 1.5
        C = torch.cat([torch.eye(2), -torch.eye(2)]).double()[None]
        bound = engine.bound(lo, hi, C, method=method)[0]
        with torch.no_grad():
            y = net(lo + (hi - lo) * torch.rand(20000, 3, dtype=torch.float64))
        least = torch.cat([y, -y], 1).min(0).values
        assert (bound <= least + 1e-9).all(), (name, method, seed)
        assert (bound > least - 50).all()  # a bound, not -inf


def test_a_prelu_with_one_slope_is_bounded_as_the_leaky_relu():
    """With slopes in [0, 1] the decomposition's relaxation is the leaky ReLU's own: the same
    CROWN bounds, to rounding."""
    torch.manual_seed(0)
    body = [nn.Linear(4, 10), None, nn.Linear(10, 10), None, nn.Linear(10, 3)]
    leaky = nn.Sequential(*[nn.LeakyReLU(0.25) if m is None else m for m in body]).double()
    prelu = nn.Sequential(*[_prelu([0.25] * 10) if m is None else m for m in body]).double()
    lo = torch.rand(1, 4, dtype=torch.float64)
    hi = lo + 0.4
    C = torch.randn(1, 5, 3, dtype=torch.float64)
    a = BoundEngine(BoundGraph.from_module(leaky, (4,))).bound(lo, hi, C, method="crown")
    b = BoundEngine(BoundGraph.from_module(prelu, (4,))).bound(lo, hi, C, method="crown")
    assert torch.allclose(a, b, rtol=0, atol=1e-9)


def test_slopes_of_both_signs_are_refused_naming_the_node():
    net = nn.Sequential(nn.Linear(3, 4), _prelu([0.5, -0.2, 0.1, 0.3]), nn.Linear(4, 2)).double()
    with pytest.raises(Unsupported, match=r"no bound for PReLU with slopes of both signs \(-0.2 to 0.5\) at node _1"):
        BoundGraph.from_module(net, (3,))


def test_relu_splitting_closes_the_gap_on_a_prelu_network():
    """Branch and bound splits the decomposition's ReLUs: on 2 inputs, proved up to 1e-3 below
    the least value of a 401 x 401 grid, and never above it."""
    torch.manual_seed(5)
    net = nn.Sequential(nn.Linear(2, 12), _prelu(_slopes(5, 0.0, 2.0, 12)), nn.Linear(12, 12),
                        _prelu(_slopes(6, -0.6, 0.0, 12)), nn.Linear(12, 1)).double()
    engine = BoundEngine(BoundGraph.from_module(net, (2,)))
    lo, hi = torch.tensor([-1.0, -1.0], dtype=torch.float64), torch.tensor([1.0, 1.0], dtype=torch.float64)
    g = torch.linspace(-1, 1, 401, dtype=torch.float64)
    with torch.no_grad():
        least = float(net(torch.cartesian_prod(g, g)).min())
    C = torch.ones(1, 1, dtype=torch.float64)
    root = float(engine.bound(lo[None], hi[None], C[None], method="alpha")[0, 0])
    assert root < least - 0.01
    result = bab.verify(engine, lo, hi, C, least - 1e-3, time_limit=20.0, mode="relu", milp_workers=1)
    assert result.proven
    above = bab.verify(engine, lo, hi, C, least + 1e-6, time_limit=2.0, mode="relu", milp_workers=1)
    assert not above.proven


@pytest.mark.parametrize("conv", [False, True])
def test_onnx_prelu_is_bounded_from_a_converted_file(tmp_path, conv):
    """ONNX PRelu (slopes per channel, (C, 1, 1) after a convolution, (C,) after a Gemm) as
    onnx2torch converts it: decomposed, and its CROWN bounds hold at sampled inputs."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from nnspec.models.loading import load_model

    rng = np.random.default_rng(3)
    const = numpy_helper.from_array
    if conv:
        shape, n_in = [1, 1, 5, 5], 25
        inits = [const(rng.normal(size=(3, 1, 3, 3)).astype(np.float32), "K"),
                 const(rng.normal(size=3).astype(np.float32), "kb"),
                 const(rng.uniform(0, 1.5, size=(3, 1, 1)).astype(np.float32), "s"),
                 const(rng.normal(size=(2, 27)).astype(np.float32), "W"), const(rng.normal(size=2).astype(np.float32), "b")]
        nodes = [helper.make_node("Conv", ["x", "K", "kb"], ["h"]), helper.make_node("PRelu", ["h", "s"], ["a"]),
                 helper.make_node("Flatten", ["a"], ["f"]), helper.make_node("Gemm", ["f", "W", "b"], ["y"], transB=1)]
    else:
        shape, n_in = [1, 4], 4
        inits = [const(rng.normal(size=(6, 4)).astype(np.float32), "W1"), const(rng.normal(size=6).astype(np.float32), "b1"),
                 const(rng.uniform(-0.9, 0, size=6).astype(np.float32), "s"),
                 const(rng.normal(size=(2, 6)).astype(np.float32), "W"), const(rng.normal(size=2).astype(np.float32), "b")]
        nodes = [helper.make_node("Gemm", ["x", "W1", "b1"], ["h"], transB=1), helper.make_node("PRelu", ["h", "s"], ["a"]),
                 helper.make_node("Gemm", ["a", "W", "b"], ["y"], transB=1)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(tmp_path / "prelu.onnx"))
    model = load_model(tmp_path / "prelu.onnx")
    engine = BoundEngine(BoundGraph.from_module(model.module, tuple(shape[1:])))
    assert "relu" in [op.kind for op in engine.graph.ops]
    lo = torch.rand([1] + shape[1:], dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    hi = lo + 0.3
    l, u = engine.intervals(lo, hi, "crown")[engine.graph.output]
    xs = lo + (hi - lo) * torch.rand([4000] + shape[1:], dtype=torch.float64)
    with torch.no_grad():
        ys = model.module.double()(xs)
    assert (ys >= l - 1e-9).all() and (ys <= u + 1e-9).all()
    assert (u - l < 100).all()
    assert n_in == lo.numel()


def test_conv_transpose_is_affine_with_exact_crown_bounds(tmp_path):
    """ConvTranspose (torch, and ONNX as onnx2torch converts it), stride 2, output padding:
    before, "no bound". In an affine network CROWN's bound is the exact minimum over the box (the
    network's matrix probed column by column); with a ReLU after it, the bounds hold at samples."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from nnspec.models.loading import load_model

    torch.manual_seed(0)
    up = nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1)
    affine = nn.Sequential(up, nn.Flatten(), nn.Linear(3 * 8 * 8, 4)).double()
    engine = BoundEngine(BoundGraph.from_module(affine, (2, 4, 4)))
    lo = torch.rand(1, 2, 4, 4, dtype=torch.float64)
    hi = lo + 0.5
    C = torch.randn(1, 3, 4, dtype=torch.float64)
    with torch.no_grad():
        bias = affine(torch.zeros(1, 2, 4, 4, dtype=torch.float64))
        W = (affine(torch.eye(32, dtype=torch.float64).reshape(32, 2, 4, 4)) - bias).T  # (4, 32)
        a = C[0] @ W  # (3, 32)
        exact = (a.clamp(min=0) * lo.flatten() + a.clamp(max=0) * hi.flatten()).sum(1) + C[0] @ bias[0]
    for method in ("ibp", "crown"):
        got = engine.bound(lo, hi, C, method=method)[0]
        assert (got <= exact + 1e-9).all()
    assert torch.allclose(engine.bound(lo, hi, C, method="crown")[0], exact, atol=1e-9, rtol=0)

    rng = np.random.default_rng(0)
    const = numpy_helper.from_array
    inits = [const(rng.normal(size=(2, 3, 3, 3)).astype(np.float32), "K"), const(rng.normal(size=3).astype(np.float32), "kb"),
             const(rng.normal(size=(2, 3 * 8 * 8)).astype(np.float32), "W"), const(rng.normal(size=2).astype(np.float32), "b")]
    nodes = [helper.make_node("ConvTranspose", ["x", "K", "kb"], ["h"], strides=[2, 2], pads=[1, 1, 1, 1],
                              output_padding=[1, 1]),
             helper.make_node("Relu", ["h"], ["a"]), helper.make_node("Flatten", ["a"], ["f"]),
             helper.make_node("Gemm", ["f", "W", "b"], ["y"], transB=1)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(tmp_path / "up.onnx"))
    model = load_model(tmp_path / "up.onnx")
    engine = BoundEngine(BoundGraph.from_module(model.module, (2, 4, 4)))
    l, u = engine.intervals(lo, hi, "crown")[engine.graph.output]
    with torch.no_grad():
        ys = model.module.double()(lo + (hi - lo) * torch.rand(4000, 2, 4, 4, dtype=torch.float64))
    assert (ys >= l - 1e-9).all() and (ys <= u + 1e-9).all()
    assert (u - l < 1000).all()


@pytest.mark.parametrize("kind", ["gelu", "silu"])
def test_gelu_and_silu_lines_and_interval_hold_and_touch(kind):
    """On 400 random intervals (narrow and wide, across the function's minimum, past +-40 and
    +-60): both lines hold at 2,001 points of each, each touches the function (the offsets are the
    exact extremes), and the interval rule holds and is attained (to the grid's resolution)."""
    from nnspec.bounds.graph import Op
    from nnspec.bounds.relax import VALLEYS, relaxation, valley_interval

    f_of = VALLEYS[kind][0]
    op = Op("g", kind, ("x",), f_of)
    gen = torch.Generator().manual_seed(0)
    centre = torch.cat([torch.randn(300, generator=gen, dtype=torch.float64) * 3,
                        torch.tensor([-0.75, -1.28, 1.4, -2.4, -45.0, 65.0, -59.0, 39.5] * 12 + [0.0] * 4,
                                     dtype=torch.float64)])
    width = torch.rand(400, generator=gen, dtype=torch.float64) * torch.tensor([0.01, 1.0, 10.0, 100.0],
                                                                             dtype=torch.float64).repeat(100)
    l, u = centre - width / 2, centre + width / 2
    al, bl, au, bu = relaxation(op, l, u)
    t = torch.linspace(0, 1, 2001, dtype=torch.float64)[:, None]
    x = torch.minimum(torch.maximum(l + (u - l) * t, l), u)  # (inside [l, u] despite rounding)
    f = f_of(x)
    below, above = f - (al * x + bl), (au * x + bu) - f
    assert (below >= 0).all() and (above >= 0).all()
    # touching to the grid's resolution: between grid points f - line grows at most as
    # max|f''| / 2 x (half the spacing)^2, and max|f''| = 2 phi(0) < 0.8
    tolerance = 0.1 * ((u - l) / 2000) ** 2 + 1e-9
    assert (below.min(0).values < tolerance).all() and (above.min(0).values < tolerance).all()
    low, high = valley_interval(kind, l, u)
    assert (low <= f.min(0).values).all() and (high >= f.max(0).values).all()
    assert (f.min(0).values - low < tolerance).all() and (high - f.max(0).values < 1e-9).all()


def _mlp_file(path, middle: list, opset: int = 13, extra: tuple = (), seed: int = 3):
    """An ONNX MLP, x (1, 4) -Gemm-> h, the nodes ``middle`` from "h" to "a", -Gemm-> y (1, 2),
    with the initializers ``extra``, loaded as nnspec loads models."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from nnspec.models.loading import load_model

    rng = np.random.default_rng(seed)
    const = numpy_helper.from_array
    inits = [const(rng.normal(size=(6, 4)).astype(np.float32), "W1"), const(rng.normal(size=6).astype(np.float32), "b1"),
             const(rng.normal(size=(2, 6)).astype(np.float32), "W"), const(rng.normal(size=2).astype(np.float32), "b"),
             *(const(np.array(v, np.float32), name) for name, v in extra)]
    nodes = [helper.make_node("Gemm", ["x", "W1", "b1"], ["h"], transB=1), *middle,
             helper.make_node("Gemm", ["a", "W", "b"], ["y"], transB=1)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)]), str(path))
    return load_model(path)


def _samples_of(model, lo, hi):
    with torch.no_grad():
        return model.module.double()(lo + (hi - lo) * torch.rand(4000, 4, dtype=torch.float64))


def test_onnx_gelu_of_opset_20_is_bounded_and_its_tanh_form_refused(tmp_path):
    from onnx import helper

    for approximate in ("none", "tanh"):
        model = _mlp_file(tmp_path / f"gelu_{approximate}.onnx",
                          [helper.make_node("Gelu", ["h"], ["a"], approximate=approximate)], opset=20)
        if approximate == "tanh":
            with pytest.raises(Unsupported, match="no bound for GELU with approximate='tanh' at node"):
                BoundGraph.from_module(model.module, (4,))
            continue
        engine = BoundEngine(BoundGraph.from_module(model.module, (4,)))
        assert [op.kind for op in engine.graph.ops if op.kind not in ("input", "affine")] == ["gelu"]
        lo = torch.rand(1, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) - 0.5
        hi = lo + 1.0
        l, u = engine.intervals(lo, hi, "crown")[engine.graph.output]
        ys = _samples_of(model, lo, hi)
        assert (ys >= l - 1e-9).all() and (ys <= u + 1e-9).all()


def test_onnx_silu_as_sigmoid_times_input_is_one_op(tmp_path):
    """SiLU as an ONNX export writes it, Mul(h, Sigmoid(h)) (either order): one silu op on h
    (before, "no bound for a product of two inputs"), its CROWN bounds hold at sampled inputs; a
    product with the sigmoid of another tensor stays refused."""
    from onnx import helper

    for order, other in ((["h", "s"], False), (["s", "h"], False), (["g", "s"], True)):
        middle = [helper.make_node("Sigmoid", ["h"], ["s"]), helper.make_node("Relu", ["h"], ["g"]),
                  helper.make_node("Mul", order, ["a"])]
        model = _mlp_file(tmp_path / f"silu_{order[0]}{order[1]}.onnx", middle, seed=4)
        if other:
            with pytest.raises(Unsupported, match="no bound for a product of two inputs"):
                BoundGraph.from_module(model.module, (4,))
            continue
        engine = BoundEngine(BoundGraph.from_module(model.module, (4,)))
        assert "silu" in [op.kind for op in engine.graph.ops]
        lo = torch.rand(1, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) - 0.5
        hi = lo + 1.0
        l, u = engine.intervals(lo, hi, "crown")[engine.graph.output]
        ys = _samples_of(model, lo, hi)
        assert (ys >= l - 1e-9).all() and (ys <= u + 1e-9).all()


@pytest.mark.parametrize("variant", ["div", "mul", "swapped", "erf alone"])
def test_onnx_erf_and_gelu_as_older_exports_write_it(tmp_path, variant):
    """Erf has a rule of its own (nondecreasing, tanh-shaped: parallel-chord lines), and GELU as
    exports before opset 20 write it, Mul(h, Add(Erf(Div(h, sqrt 2)), 1)) then Mul by 0.5 (or
    Mul(h, 1/sqrt 2) inside, or the product's factors swapped), is read as GELU: one gelu op,
    the replaced ops dropped (before, "no bound for OnnxErf"). Bounds hold at sampled inputs."""
    from onnx import helper

    middle = [helper.make_node("Mul", ["h", "ic"], ["d"]) if variant == "mul" else helper.make_node("Div", ["h", "c"], ["d"])]
    if variant == "erf alone":
        middle.append(helper.make_node("Erf", ["d"], ["a"]))
    else:
        middle += [helper.make_node("Erf", ["d"], ["e"]), helper.make_node("Add", ["e", "one"], ["p"]),
                   helper.make_node("Mul", ["p", "h"] if variant == "swapped" else ["h", "p"], ["m"]),
                   helper.make_node("Mul", ["m", "half"], ["a"])]
    model = _mlp_file(tmp_path / "erf.onnx", middle,
                      extra=(("c", np.sqrt(2)), ("ic", 1 / np.sqrt(2)), ("one", 1.0), ("half", 0.5)))
    engine = BoundEngine(BoundGraph.from_module(model.module, (4,)))
    kinds = [op.kind for op in engine.graph.ops if op.kind not in ("input", "affine")]
    assert kinds == (["erf"] if variant == "erf alone" else ["gelu"])
    for seed in range(3):
        lo = torch.rand(1, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * 2 - 1.5
        hi = lo + 1.0
        ys = _samples_of(model, lo, hi)
        for method in ("ibp", "crown", "alpha"):
            C = torch.cat([torch.eye(2), -torch.eye(2)]).double()[None]
            bound = engine.bound(lo, hi, C, method=method)[0]
            assert (bound <= torch.cat([ys, -ys], 1).min(0).values + 1e-6).all()
