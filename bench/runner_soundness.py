"""The VNN-COMP runner against exact answers on random instances (issue 12's "0 wrong answers").

    python -m bench.runner_soundness [--instances 200] [--seed 0] [--timeouts 20,60] [--width 16 --depth 3]
    python -m bench.runner_soundness --arch mixed [--instances 100]

Each instance is a random ReLU network (a float32 ONNX chain of Gemm and Relu, 2-8 inputs, one to
``--depth`` hidden layers of 4 to ``--width`` neurons, 2-5 outputs), one or two input boxes, and an unsafe set: a
disjunction of one to three conjunctions of one or two linear atoms over the outputs (``Y_i <= c``,
``Y_i - Y_j >= c``, ``a Y_i + b Y_j <= c``). The thresholds are placed near the extremes that
random samples of the box reach, so that about half the instances are sat and many sit close to
the boundary, where a sound verifier has the least room.

The exact answer comes from a MILP written here, independent of nnspec's MILP code: for each box and
conjunction, the largest margin t with every atom's ``a.y <= c - t`` over the network's big-M
encoding (interval bounds in float64 on the float32 weights; scipy's HiGHS). sat where the best t
is above ``--tolerance``, unsat where it is below ``-tolerance`` (at most 30 s per MILP: past it, the
best point found and HiGHS's dual bound decide, where they can); instances in between (the float32
network and the float64 MILP may disagree there, or HiGHS did not finish) are counted, not scored.

Each instance goes through ``nnspec.interop.vnncomp.solve`` (the code behind ``nnspec vnncomp run``),
one at a time, with a timeout drawn from ``--timeouts`` (60 s and more start with the quick round).
A wrong answer is ``sat`` on an exact unsat instance or ``unsat`` on an exact sat one; every ``sat``
counterexample is also checked here (inside a box, and the float32 network's outputs there satisfy
a whole conjunction). Prints one line per wrong answer and a summary table for docs/benchmarks.md.

``--arch mixed``: small image networks (1 x 6 x 6 inputs) of the other operators the bound engine
has rules for (Conv, BatchNormalization, Relu / LeakyRelu / Sigmoid / Tanh, MaxPool / AveragePool,
strided Conv, residual Add), boxes of radius 0.002-0.1 in [0, 1], thresholds placed near the least
value an attack finds. There is no exact answer there: an instance is sat where a stronger attack
than the runner's first rounds finds a counterexample that onnxruntime confirms, and the runner's
unsat on it is wrong; its other unsat answers can only be checked by the attack.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np

from bench.common import ROOT


def random_network(rng: np.random.Generator, width: int = 16, depth: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    n_in = int(rng.choice([2, 3, 5, 8]))
    widths = [int(rng.integers(4, width + 1)) for _ in range(int(rng.integers(1, depth + 1)))]
    n_out = int(rng.choice([2, 3, 5]))
    sizes = [n_in] + widths + [n_out]
    return [((rng.standard_normal((b, a)) / np.sqrt(a)).astype(np.float32),
             (0.3 * rng.standard_normal(b)).astype(np.float32)) for a, b in zip(sizes, sizes[1:])]


def write_onnx(layers, path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, last = [], [], "x"
    for k, (w, b) in enumerate(layers):
        inits += [numpy_helper.from_array(w, f"W{k}"), numpy_helper.from_array(b, f"b{k}")]
        nodes.append(helper.make_node("Gemm", [last, f"W{k}", f"b{k}"], [f"z{k}"], transB=1))
        last = f"z{k}"
        if k < len(layers) - 1:
            nodes.append(helper.make_node("Relu", [last], [f"h{k}"]))
            last = f"h{k}"
    nodes[-1].output[0] = "y"
    graph = helper.make_graph(nodes, "random_relu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, layers[0][0].shape[1]])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, layers[-1][0].shape[0]])],
                              inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))


def forward(layers, x: np.ndarray) -> np.ndarray:
    """The network in float32, as onnxruntime runs it (up to the order of its sums)."""
    h = x.astype(np.float32)
    for k, (w, b) in enumerate(layers):
        h = h @ w.T + b
        if k < len(layers) - 1:
            h = np.maximum(h, 0)
    return h


def random_graph(rng: np.random.Generator, path: Path) -> None:
    """A small image network of the operators the bound engine has rules for, beyond Gemm + Relu:
    Conv (padding, stride), BatchNormalization, Relu / LeakyRelu / Sigmoid / Tanh, MaxPool /
    AveragePool, a residual Add of two branches, Flatten, Gemm. Input 1 x 1 x 6 x 6."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    f32 = lambda *shape: (rng.standard_normal(shape) / np.sqrt(max(1, np.prod(shape[1:])))).astype(np.float32)  # noqa: E731
    c = int(rng.integers(2, 5))
    act = str(rng.choice(["Relu", "LeakyRelu", "Sigmoid", "Tanh"]))
    inits = [numpy_helper.from_array(f32(c, 1, 3, 3), "cw"), numpy_helper.from_array(f32(c), "cb")]
    nodes = [helper.make_node("Conv", ["x", "cw", "cb"], ["c1"], pads=[1, 1, 1, 1])]
    last = "c1"
    if rng.random() < 0.5:
        inits += [numpy_helper.from_array(a, n) for a, n in [
            ((np.abs(f32(c)) + 0.5), "scale"), (f32(c), "shift"), (f32(c), "mean"), ((np.abs(f32(c)) + 0.5), "var")]]
        nodes.append(helper.make_node("BatchNormalization", [last, "scale", "shift", "mean", "var"], ["bn"]))
        last = "bn"
    attrs = {"alpha": 0.1} if act == "LeakyRelu" else {}
    nodes.append(helper.make_node(act, [last], ["a1"], **attrs))
    last = "a1"
    if rng.random() < 0.5:  # a residual block: conv -> act, added to its input
        inits += [numpy_helper.from_array(f32(c, c, 3, 3), "rw"), numpy_helper.from_array(f32(c), "rb")]
        nodes += [helper.make_node("Conv", [last, "rw", "rb"], ["r1"], pads=[1, 1, 1, 1]),
                  helper.make_node(act, ["r1"], ["r2"], **attrs),
                  helper.make_node("Add", ["r2", last], ["res"])]
        last = "res"
    side = 6
    pool = str(rng.choice(["MaxPool", "AveragePool", "Conv", "none"]))
    if pool == "Conv":  # a strided convolution
        inits += [numpy_helper.from_array(f32(c, c, 2, 2), "sw"), numpy_helper.from_array(f32(c), "sb")]
        nodes += [helper.make_node("Conv", [last, "sw", "sb"], ["p"], strides=[2, 2]), helper.make_node(act, ["p"], ["pa"])]
        last, side = "pa", 3
    elif pool != "none":
        nodes.append(helper.make_node(pool, [last], ["p"], kernel_shape=[2, 2], strides=[2, 2]))
        last, side = "p", 3
    hidden, n_out = int(rng.integers(4, 13)), int(rng.choice([2, 3, 5]))
    flat = c * side * side
    inits += [numpy_helper.from_array(f32(hidden, flat), "W1"), numpy_helper.from_array(f32(hidden), "B1"),
              numpy_helper.from_array(f32(n_out, hidden), "W2"), numpy_helper.from_array(f32(n_out), "B2")]
    nodes += [helper.make_node("Flatten", [last], ["flat"]),
              helper.make_node("Gemm", ["flat", "W1", "B1"], ["h"], transB=1),
              helper.make_node(act, ["h"], ["ha"], **attrs),
              helper.make_node("Gemm", ["ha", "W2", "B2"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "random_graph",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n_out])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), str(path))


class OrtNetwork:
    """A saved network, evaluated by onnxruntime (x: (B, n) -> (B, m), float32), with gradients
    from its onnx2torch conversion for the attack (whose points onnxruntime then re-evaluates)."""

    def __init__(self, path: Path):
        import onnxruntime as ort
        import torch
        from onnx2torch import convert

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        meta = self.session.get_inputs()[0]
        self.name, self.shape = meta.name, [int(d) for d in meta.shape[1:]]
        self.torch = convert(str(path)).eval()
        self.n_in = int(np.prod(self.shape))
        self.n_out = int(self.__call__(np.zeros((1, self.n_in)))[0].shape[0])
        torch.set_grad_enabled(True)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([self.session.run(None, {self.name: row.reshape([1] + self.shape).astype(np.float32)})[0]
                               for row in np.asarray(x, np.float32)])

    def lowest(self, lo: np.ndarray, hi: np.ndarray, a: np.ndarray, restarts: int = 16, steps: int = 60) -> float:
        """The least a.y that projected gradient descent finds over the box (onnxruntime's value)."""
        found = self.attack([(lo, hi)], [[(a, 0.0)]], np.random.default_rng(0), restarts, steps, keep_best=True)
        return float(np.asarray(self(found[None]), np.float64)[0] @ a)

    def attack(self, boxes, unsafe, rng, restarts: int = 64, steps: int = 150, keep_best: bool = False):
        """Projected gradient descent on each conjunction's worst atom, from random starts: a point
        that onnxruntime confirms violates the query, or None (``keep_best``: the point with the
        least worst atom, violating or not)."""
        import torch

        for lo, hi in boxes:
            lo_t, hi_t = torch.tensor(lo, dtype=torch.float32), torch.tensor(hi, dtype=torch.float32)
            for conj in unsafe:
                a = torch.tensor(np.stack([a for a, _ in conj]), dtype=torch.float32)
                c = torch.tensor([c for _, c in conj], dtype=torch.float32)
                x = (lo_t + (hi_t - lo_t) * torch.rand(restarts, len(lo), generator=torch.Generator().manual_seed(
                    int(rng.integers(1 << 31))))).requires_grad_(True)
                step = (hi_t - lo_t) / 8
                for k in range(steps):
                    y = self.torch(x.view(-1, *self.shape))
                    loss = (y @ a.T - c).max(dim=1).values  # <= 0 violates the conjunction
                    g, = torch.autograd.grad(loss.sum(), x)
                    with torch.no_grad():
                        x -= step * g.sign() * (0.97 ** k)
                        x.copy_(torch.maximum(torch.minimum(x, hi_t), lo_t))
                points = x.detach().numpy()
                if keep_best:
                    return points[int(torch.argmin(loss.detach()))]
                ys = self(points).astype(np.float64)
                for p, y in zip(points, ys):
                    if all(a_ @ y <= c_ for a_, c_ in conj):
                        return p
        return None


# ---------------------------------------------------------------- the query


def random_query(evaluate, n_in: int, n_out: int, rng: np.random.Generator, radii=(0.01, 0.5), lowest=None,
                 domain: tuple[float, float] | None = None):
    """(boxes [(lower, upper)], unsafe [[(a, c)]]): an atom (a, c) is a.y <= c. ``evaluate``: x (B, n)
    -> y (B, m); ``lowest(lo, hi, a)``: a search's least a.y over a box, where sampling is not
    enough to place thresholds near the boundary (many inputs)."""
    boxes = []
    for _ in range(1 if rng.random() < 0.8 else 2):
        centre = rng.random(n_in)
        radius = float(np.exp(rng.uniform(np.log(radii[0]), np.log(radii[1]))))
        lo, hi = centre - radius, centre + radius
        boxes.append((lo, hi) if domain is None else (np.clip(lo, *domain), np.clip(hi, *domain)))
    samples = np.concatenate([lo + (hi - lo) * rng.random((4000 if lowest is None else 500, n_in)) for lo, hi in boxes])
    ys = np.asarray(evaluate(samples), np.float64)
    unsafe = []
    for _ in range(int(rng.integers(1, 4))):
        conj = []
        for _ in range(int(rng.integers(1, 3))):
            a = np.zeros(n_out)
            i, j = rng.choice(n_out, 2, replace=False)
            kind = rng.integers(3)
            if kind == 0:
                a[i] = rng.choice([-1.0, 1.0])
            elif kind == 1:
                a[i], a[j] = 1.0, -1.0
            else:
                a[i], a[j] = np.round(rng.uniform(-2, 2, 2), 2)
            values = ys @ a
            low, spread = values.min(), values.max() - values.min() + 1e-3
            if lowest is not None:
                low = min(low, min(lowest(lo, hi, a) for lo, hi in boxes))
            conj.append((a, float(np.round(low + spread * rng.uniform(-0.15, 0.1), 4))))
        unsafe.append(conj)
    return boxes, unsafe


def _num(v: float) -> str:
    return repr(float(v))


def _expr(a: np.ndarray) -> str:
    terms = [f"(* {_num(v)} Y_{j})" for j, v in enumerate(a) if v != 0]
    return terms[0] if len(terms) == 1 else f"(+ {' '.join(terms)})"


def vnnlib_text(boxes, unsafe, n_out: int) -> str:
    n_in = len(boxes[0][0])
    lines = [f"(declare-const X_{i} Real)" for i in range(n_in)] + \
            [f"(declare-const Y_{j} Real)" for j in range(n_out)]
    box_terms = [" ".join(f"(>= X_{i} {_num(lo[i])}) (<= X_{i} {_num(hi[i])})" for i in range(n_in))
                 for lo, hi in boxes]
    lines.append(f"(assert (and {box_terms[0]}))" if len(boxes) == 1 else
                 "(assert (or " + " ".join(f"(and {t})" for t in box_terms) + "))")
    conjs = [" ".join(f"(<= {_expr(a)} {_num(c)})" for a, c in conj) for conj in unsafe]
    lines.append("(assert (or " + " ".join(f"(and {t})" for t in conjs) + "))")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the exact answer


def best_margin(layers, lower: np.ndarray, upper: np.ndarray, conj) -> tuple[float, np.ndarray]:
    """max t over the box such that a.y <= c - t for every atom of the conjunction (big-M MILP),
    and the x that reaches it."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    ws = [(w.astype(np.float64), b.astype(np.float64)) for w, b in layers]
    n_in = len(lower)
    # variables: x, then per hidden layer its outputs h and indicators d, then t
    cols, var_lo, var_hi, integral = n_in, list(lower), list(upper), [0] * n_in
    prev, prev_lo, prev_hi = list(range(n_in)), np.asarray(lower, float), np.asarray(upper, float)
    rows, rhs_lo, rhs_hi = [], [], []

    def row(entries: dict, lo: float, hi: float) -> None:
        rows.append(entries)
        rhs_lo.append(lo)
        rhs_hi.append(hi)

    for w, b in ws[:-1]:
        z_lo = np.clip(w, 0, None) @ prev_lo + np.clip(w, None, 0) @ prev_hi + b
        z_hi = np.clip(w, 0, None) @ prev_hi + np.clip(w, None, 0) @ prev_lo + b
        hs = []
        for k in range(w.shape[0]):
            h = cols
            cols += 1
            var_lo.append(0.0)
            var_hi.append(max(z_hi[k], 0.0))
            integral.append(0)
            z = {p: w[k, q] for q, p in enumerate(prev)}
            if z_lo[k] >= 0:  # h = z
                row({**{p: -v for p, v in z.items()}, h: 1.0}, b[k], b[k])
            elif z_hi[k] <= 0:  # h = 0
                var_hi[-1] = 0.0
            else:
                d = cols
                cols += 1
                var_lo.append(0.0)
                var_hi.append(1.0)
                integral.append(1)
                row({**{p: -v for p, v in z.items()}, h: 1.0}, b[k], np.inf)  # h >= z
                # h <= z - z_lo (1 - d)  <=>  h - z - z_lo d <= -z_lo + b
                row({**{p: -v for p, v in z.items()}, h: 1.0, d: -z_lo[k]}, -np.inf, b[k] - z_lo[k])
                row({h: 1.0, d: -z_hi[k]}, -np.inf, 0.0)  # h <= z_hi d
            hs.append(h)
        prev, prev_lo, prev_hi = hs, np.maximum(z_lo, 0), np.maximum(z_hi, 0)
    w, b = ws[-1]
    t = cols
    cols += 1
    var_lo.append(-1e6)
    var_hi.append(1e6)
    integral.append(0)
    for a, c in conj:  # a.(W h + b) + t <= c
        coef = a @ w
        row({**{p: coef[q] for q, p in enumerate(prev)}, t: 1.0}, -np.inf, c - a @ b)
    matrix = np.zeros((len(rows), cols))
    for r, entries in enumerate(rows):
        for col, v in entries.items():
            matrix[r, col] += v
    objective = np.zeros(cols)
    objective[t] = -1.0
    res = milp(objective, constraints=LinearConstraint(matrix, rhs_lo, rhs_hi), integrality=integral,
               bounds=Bounds(var_lo, var_hi), options={"mip_rel_gap": 0.0, "time_limit": 30.0})
    # within the time limit: the best point found (a lower bound of t) and HiGHS's dual bound (an upper one)
    found = float(res.x[t]) if res.x is not None else -np.inf
    bound = -float(res.mip_dual_bound) if res.mip_dual_bound is not None else np.inf
    if res.status == 0:
        bound = found
    return found, bound, (res.x[:n_in] if res.x is not None else None)


def exact_answer(layers, boxes, unsafe) -> tuple[float, float, np.ndarray | None]:
    """Bounds on the largest margin of any box and conjunction (> 0 sat, < 0 unsat), and the
    point of the best one found."""
    results = [best_margin(layers, lo, hi, conj) for lo, hi in boxes for conj in unsafe]
    best = max(results, key=lambda r: r[0])
    return best[0], max(r[1] for r in results), best[2]


def boxes_of(boxes, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The bounds of the box that holds x (the MILP's point, up to its feasibility tolerance)."""
    return min(boxes, key=lambda b: float(np.abs(np.clip(x, b[0], b[1]) - x).sum()))


def violates(evaluate, boxes, unsafe, x: np.ndarray) -> bool:
    """Whether x (as float32) lies in a box and ``evaluate``'s outputs there satisfy a whole conjunction."""
    x32 = np.asarray(x, np.float32)
    inside = any(np.all(x32 >= lo.astype(np.float32)) and np.all(x32 <= hi.astype(np.float32)) for lo, hi in boxes)
    y = np.asarray(evaluate(x32[None]), np.float64)[0]
    return inside and any(all(a @ y <= c for a, c in conj) for conj in unsafe)


# ---------------------------------------------------------------- the sweep


def relu_instance(args, rng, onnx_path: Path) -> dict:
    layers = random_network(rng, args.width, args.depth)
    write_onnx(layers, onnx_path)
    n_in, n_out = layers[0][0].shape[1], layers[-1][0].shape[0]

    def network(x):
        return forward(layers, x)
    boxes, unsafe = random_query(network, n_in, n_out, rng)

    def truth() -> str:
        margin, ceiling, x_best = exact_answer(layers, boxes, unsafe)
        found = "sat" if margin > args.tolerance else "unsat" if ceiling < -args.tolerance else "close"
        # the exact answer checks itself: its point violates where it says sat, no sample where unsat
        samples = np.concatenate([lo + (hi - lo) * rng.random((2000, len(lo))) for lo, hi in boxes])
        if (found == "sat" and not violates(network, boxes, unsafe, np.clip(x_best, *boxes_of(boxes, x_best)))) \
                or (found == "unsat" and any(violates(network, boxes, unsafe, x) for x in samples)):
            raise RuntimeError(f"the exact MILP contradicts the network ({margin}, {ceiling})")
        return found

    return {"network": [n_in] + [w.shape[0] for w, _ in layers], "boxes": boxes, "unsafe": unsafe, "n_out": n_out,
            "truth": truth, "violates": lambda x: violates(network, boxes, unsafe, x)}


def mixed_instance(args, rng, onnx_path: Path) -> dict:
    """No exact answer: a stronger attack than the runner's first rounds (64 restarts x 150 steps per
    box and conjunction) that onnxruntime confirms makes an instance sat; the runner's unsat there
    is wrong. Its other unsat answers are not checked, only its witnesses."""
    random_graph(rng, onnx_path)
    net = OrtNetwork(onnx_path)
    boxes, unsafe = random_query(net, net.n_in, net.n_out, rng, radii=(0.002, 0.1), lowest=net.lowest, domain=(0, 1))

    def truth() -> str:
        return "sat" if net.attack(boxes, unsafe, rng) is not None else "no attack witness"

    ops = sorted({n.op_type for n in __import__("onnx").load(str(onnx_path)).graph.node})
    return {"network": ops, "boxes": boxes, "unsafe": unsafe, "n_out": net.n_out, "truth": truth,
            "violates": lambda x: violates(net, boxes, unsafe, x)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeouts", default="20,60", help="comma-separated; instance k gets the k-th mod len")
    parser.add_argument("--width", type=int, default=16, help="hidden layers have 4 to WIDTH neurons")
    parser.add_argument("--depth", type=int, default=3, help="1 to DEPTH hidden layers")
    parser.add_argument("--arch", choices=["relu", "mixed"], default="relu",
                        help="relu: ReLU chains, exact answers; mixed: small image networks, attacked")
    parser.add_argument("--tolerance", type=float, default=1e-3, help="exact margins within this are not scored")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/runner_soundness.jsonl")
    args = parser.parse_args()
    import tempfile

    import torch

    from nnspec.interop.vnncomp import solve

    torch.set_num_threads(2)
    timeouts = [float(t) for t in args.timeouts.split(",")]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tally, wrong, seconds = Counter(), [], []
    with tempfile.TemporaryDirectory() as tmp, args.out.open("w") as log:
        for k in range(args.instances):
            rng = np.random.default_rng([args.seed, k])
            onnx_path, query_path = Path(tmp) / f"net{k}.onnx", Path(tmp) / f"q{k}.vnnlib"
            instance = (relu_instance if args.arch == "relu" else mixed_instance)(args, rng, onnx_path)
            query_path.write_text(vnnlib_text(instance["boxes"], instance["unsafe"], instance["n_out"]))
            timeout = timeouts[k % len(timeouts)]
            answer = solve(onnx_path, query_path, timeout, seed=k)
            seconds.append(answer.seconds)
            truth = instance["truth"]()
            bad = (answer.result == "sat" and (truth == "unsat" or not instance["violates"](answer.x))) or \
                  (answer.result == "unsat" and truth == "sat")
            tally[(truth, answer.result)] += 1
            record = {"instance": k, "network": instance["network"], "boxes": len(instance["boxes"]),
                      "conjunctions": len(instance["unsafe"]), "timeout": timeout, "truth": truth,
                      "result": answer.result, "seconds": round(answer.seconds, 3), "wrong": bad}
            log.write(json.dumps(record) + "\n")
            log.flush()
            if bad:
                wrong.append(record)
                print("WRONG", json.dumps(record), flush=True)
            if (k + 1) % 20 == 0:
                print(f"{k + 1} instances, {len(wrong)} wrong", flush=True)
    what = (f"widths 4-{args.width}, 1-{args.depth} hidden layers" if args.arch == "relu" else "mixed graphs")
    print(f"\n{args.instances} instances (seed {args.seed}, {what}, "
          f"timeouts {args.timeouts} s), {len(wrong)} wrong; "
          f"median {np.median(seconds):.2f} s, max {max(seconds):.2f} s")
    print("| answer \\ runner | sat | unsat | unknown | timeout |\n|---|---|---|---|---|")
    for truth in ("sat", "unsat", "close", "no attack witness"):
        if not any(tally[(truth, r)] for r in ("sat", "unsat", "unknown", "timeout")):
            continue
        print(f"| {truth} | " + " | ".join(str(tally[(truth, r)]) for r in ("sat", "unsat", "unknown", "timeout")) + " |")


if __name__ == "__main__":
    main()
