"""`nnspec-vnnlib`: the solver command line of the VNN-LIB 2.0 standard (chapter 5).

    nnspec-vnnlib verify QUERY.vnnlib [--network NAME=NET.onnx] [--timeout SECONDS]
    nnspec-vnnlib supports --vnnlib-versions | --onnx-opset-versions | ... (one capability)
    nnspec-vnnlib --name | --version

``verify`` prints one result line, ``sat``, ``unsat``, ``unknown`` or ``timed-out``; after ``sat``
the assignment in the standard's command-line format (each declared variable: ``NAME TYPE [dims]``
and its values, one per line, row-major). Results go to stdout and everything else to stderr. Exit
codes (the standard defines none): 0 an answer was given, 1 a usage error, 2 a query or network
nnspec cannot read. The network comes from ``--network`` (its name as the query declares it; a
VNN-LIB 1.0 query's network is called N) or, when there is one declared network and no
``--network``, from an instances.csv beside the query.
"""

from __future__ import annotations

import argparse
import sys
import time

from nnspec import __version__

STARTED = time.perf_counter()

CAPABILITIES = {
    "--onnx-opset-versions": "8\n21\n",  # older opsets are converted up with onnx.version_converter
    "--onnx-element-types": "float32\nfloat64\n",
    "--onnx-operators": "".join(f"{op} float32 float64\n" for op in (
        "Add", "AveragePool", "BatchNormalization", "Clip", "Concat", "Constant", "Conv", "Div", "Dropout", "Elu", "Flatten",
        "Gemm", "GlobalAveragePool", "Identity", "LeakyRelu", "MatMul", "MaxPool", "Mul", "Neg", "Pad",
        "ReduceMean", "ReduceSum", "Relu", "Reshape", "Sigmoid", "Sign", "Slice", "Softplus", "Squeeze", "Sub", "Tanh",
        "Transpose", "Unsqueeze")),
    "--vnnlib-versions": "1.0\n2.0\n",
    "--hidden-node-theories": "NH\n",
    "--multiple-input-output-theories": "SIO\n",
    "--multiple-network-theories": "SNET\n",
    "--multiple-node-comparison-theories": "SNC\nMNC\n",
    "--arithmetic-complexity-theories": "BND\nLIN\n",
    "--optimised-disjunctive-reasoning": "true\n",
    "--serialise-assignments": "false\n",
}
EXIT_ANSWER, EXIT_USAGE, EXIT_INPUT = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # usage errors exit 1, not argparse's 2
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="nnspec-vnnlib", description="nnspec as a VNN-LIB solver", allow_abbrev=False)
    who = p.add_mutually_exclusive_group()
    who.add_argument("--name", action="store_true", help="print the solver's name")
    who.add_argument("--version", action="store_true", help="print the solver's version")
    sub = p.add_subparsers(dest="command")
    v = sub.add_parser("verify", help="answer one query")
    v.add_argument("query")
    v.add_argument("--network", action="append", default=[], metavar="NAME=FILE")
    v.add_argument("--timeout", type=int, default=None, metavar="SECONDS")
    v.add_argument("--serialise-assignments", "--assignments", dest="serialise", default=None)
    for name in ("supports", "capabilities"):
        s = sub.add_parser(name, help="report one capability" if name == "supports" else argparse.SUPPRESS)
        g = s.add_mutually_exclusive_group(required=True)
        for cap in CAPABILITIES:
            g.add_argument(cap, dest="capability", action="store_const", const=cap)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.name:
        sys.stdout.write("nnspec\n")
        return EXIT_ANSWER
    if args.version:
        sys.stdout.write(f"{__version__}\n")
        return EXIT_ANSWER
    if args.command in ("supports", "capabilities"):
        sys.stdout.write(CAPABILITIES[args.capability])
        return EXIT_ANSWER
    if args.command != "verify":
        parser().print_usage(sys.stderr)
        return EXIT_USAGE
    return _verify(args)


def _verify(args) -> int:
    from pathlib import Path

    from nnspec.errors import InputError
    from nnspec.interop.vnnlib import model_for_query, read_query

    if args.timeout is not None and args.timeout < 0:
        print(f"nnspec-vnnlib: --timeout must be >= 0, not {args.timeout}", file=sys.stderr)
        return EXIT_USAGE
    if args.serialise:
        print("nnspec-vnnlib: warning: --serialise-assignments is not supported; the assignment goes to stdout",
              file=sys.stderr)
    query_path = Path(args.query)
    try:
        query = read_query(query_path)
        networks = {}
        for item in args.network:
            name, sep, file = item.partition("=")
            if not sep or not name or not file:
                print(f"nnspec-vnnlib: --network {item!r}: expected NAME=FILE", file=sys.stderr)
                return EXIT_USAGE
            networks[name] = Path(file)
        if len(networks) > 1:
            print("nnspec-vnnlib: the query declares one network; --network was given more than once",
                  file=sys.stderr)
            return EXIT_USAGE
        model = next(iter(networks.values()), None) or model_for_query(query_path)
        if model is None:
            print(f"nnspec-vnnlib: no model file for the network of {query_path}: give --network N=FILE",
                  file=sys.stderr)
            return EXIT_USAGE
        from nnspec.interop.vnncomp import solve

        answer = solve(model, query_path, float(args.timeout) if args.timeout else 3600.0, started=STARTED)
    except InputError as err:
        print(f"nnspec-vnnlib: {err.one_line() if hasattr(err, 'one_line') else err}", file=sys.stderr)
        return EXIT_INPUT
    result = {"timeout": "timed-out"}.get(answer.result, answer.result)
    out = [result]
    if result == "sat":
        dims = ",".join(str(d) for d in query.input_shape)
        out.append(f"X real [{dims}]")
        out.extend(repr(float(v)) for v in answer.x)
        out.append(f"Y real [{answer.y.size}]")
        out.extend(repr(float(v)) for v in answer.y)
    sys.stdout.write("\n".join(out) + "\n")
    return EXIT_ANSWER


def run() -> None:  # pragma: no cover - the console script
    sys.exit(main())
