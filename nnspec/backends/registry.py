"""One registry of backends. Built-ins register the same way a plugin would; duplicates fail."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nnspec.backends.options import BackendInfo, Capabilities, OptionSpec

if TYPE_CHECKING:  # pragma: no cover
    from nnspec.backends.base import Backend

_INFOS: dict[str, BackendInfo] = {}
_FACTORIES: dict[str, str] = {}  # name -> "module:attribute", imported on first use


def register(info: BackendInfo, factory: str) -> None:
    if info.name in _INFOS:
        raise ValueError(f"backend {info.name!r} is already registered")
    _INFOS[info.name] = info
    _FACTORIES[info.name] = factory


def info(name: str) -> BackendInfo | None:
    return _INFOS.get(name)


def names() -> list[str]:
    return sorted(_INFOS)


def for_kind(kind: str) -> list[BackendInfo]:
    return [i for i in _INFOS.values() if kind in i.capabilities.kinds]


def create(name: str) -> "Backend":
    import importlib

    module, attr = _FACTORIES[name].split(":")
    return getattr(importlib.import_module(module), attr)()


BOUND_METHODS = ("auto", "ibp", "crown", "alpha", "hull", "bab", "milp", "none")
BOUND_DOC = ("the sound lower bound of the radius where s is a logit margin: ibp, crown, alpha (alpha-CROWN), "
             "hull (alpha-CROWN with the single-neuron hull's facets, dense ReLU chains), bab (branch and bound), "
             "milp (exact, small ReLU networks), none, or auto (CROWN, then branch and bound on the whole ball where "
             "the searches found no violation and CROWN falls short of it by at most 1.5x; past 4,096 neurons per "
             "layer IBP, then CROWN from IBP's radius for bound_time)")

MADS = BackendInfo(
    name="mads",
    summary="DeepQuant: Lipschitz-metric radius estimate and witnesses by tensor-parallel MADS "
            "(augmented Lagrangian or projection for L1/L2)",
    capabilities=Capabilities(
        kinds=("robustness", "uncertainty", "reachability", "range", "formula"),
        norms=("linf", "l2", "l1"),
        gives=("estimate", "upper", "lower"),
    ),
    options=(
        OptionSpec("budget", int, None, "model queries per input (planner: by dimension)", minimum=1),
        OptionSpec("seed", int, 0, "random seed; the same seed gives the same run", minimum=0),
        OptionSpec("time", float, 0.0, "wall-clock seconds per input, 0 for no limit", minimum=0),
        OptionSpec("poll", str, "orthomads", "poll directions: orthomads (dense, MADS) or gps ([I, -I])",
                   choices=("orthomads", "gps")),
        OptionSpec("directions", int, 0, "poll directions per iteration, 0 for all 2n", minimum=0),
        OptionSpec("search", int, None, "random search points per iteration (planner: by dimension)",
                   minimum=0),
        OptionSpec("tolerance", float, 1e-6, "stop when the poll size falls below this", minimum=0),
        OptionSpec("constraint", str, "project", "L1/L2 ball handling: project (exact projection) or "
                   "auglag (the paper's augmented Lagrangian)", choices=("project", "auglag")),
        OptionSpec("refine", bool, True, "move a found witness toward the centre"),
        OptionSpec("attack", str, "auto", "the violation search: auto (projected gradient first where the gradient "
                   "of s is usable, then MADS; with refine, witnesses of L-inf and L1 balls on ReLU chains are "
                   "moved by the region LP), gradient (always try gradients), mads (derivative-free only, "
                   "the paper's method)", choices=("auto", "gradient", "mads")),
        OptionSpec("bound", str, "auto", BOUND_DOC, choices=BOUND_METHODS),
        OptionSpec("bound_time", float, 10.0, "seconds per input for bound=bab or bound=milp (anytime), and "
                   "for bound=auto's branch and bound (past 4,096 neurons per layer: its CROWN)", minimum=0),
        OptionSpec("bound_violated", bool, True, "also bound the safe radius of an input with a confirmed "
                   "violation (below the closest witness); false: the bound's time goes only to inputs without one"),
        OptionSpec("ibp", bool, True, "false: no sound lower bound (the same as bound=none; kept for older specs)"),
    ),
)
register(MADS, "nnspec.backends.quant:QuantBackend")


GAME = BackendInfo(
    name="game",
    summary="DeepGame: maximum safe radius and feature robustness as games on the tau-grid; best-first "
            "and MCTS upper bounds, admissible A* and alpha-beta bounds of the grid game, sound lower "
            "bounds from a Lipschitz constant and Theorem 1",
    capabilities=Capabilities(
        kinds=("max_radius", "feature_robustness"),
        norms=("l0", "l1", "l2", "linf"),
        gives=("upper", "lower"),
    ),
    options=(
        OptionSpec("budget", int, None, "model queries per input, all bounds together (planner: by dimension)", minimum=1),
        OptionSpec("seed", int, 0, "random seed of the searches", minimum=0),
        OptionSpec("time", float, 0.0, "wall-clock seconds per input, all bounds together; 0 for no limit", minimum=0),
        OptionSpec("epsilon", float, 0.0, "stop once the upper bound is within epsilon of a lower bound (0: when "
                   "they meet)", minimum=0),
        OptionSpec("upper", str, "best_first", "upper bounds: best_first (the paper's inadmissible A*), mcts "
                   "(Algorithm 1), or none", choices=("best_first", "mcts", "none")),
        OptionSpec("lower", str, "astar", "grid-game lower bounds: astar (needs a Lipschitz constant), or none",
                   choices=("astar", "none")),
        OptionSpec("tau", float, None, "the atomic manipulation (planner: radius / 8; 1 for l0)", minimum=0),
        OptionSpec("weight", float, 8.0, "best_first: heuristic weight (1: A*-like breadth; larger: greedier)",
                   minimum=0),
        OptionSpec("candidates", int, None, "best_first: moves kept after the root's expansion, by their drop "
                   "of s (planner: max(128, moves / 8)); 0 for all", minimum=0),
        OptionSpec("playouts", int, 32, "mcts: playouts per iteration, evaluated together", minimum=1),
        OptionSpec("guided", bool, True, "mcts: draw playout moves by their effect at the centre (False: "
                   "uniform, as the paper)"),
        OptionSpec("lipschitz", float, 0.0, "a Lipschitz constant of the margin you vouch for; 0: from "
                   "lipschitz_source", minimum=0),
        OptionSpec("lipschitz_source", str, "layers", "layers: a sound constant from the network's layers "
                   "(dense/conv/pool chains); estimate: sampled gradients (bounds then only estimates)",
                   choices=("layers", "estimate")),
        OptionSpec("bound", str, "auto", BOUND_DOC, choices=BOUND_METHODS),
        OptionSpec("bound_time", float, 10.0, "seconds per input for bound=bab or bound=milp (anytime), and "
                   "for bound=auto's branch and bound (past 4,096 neurons per layer: its CROWN)", minimum=0),
        OptionSpec("ibp", bool, True, "false: no sound lower bound (the same as bound=none; kept for older specs)"),
        OptionSpec("attack", str, "none", "gradient: a gradient stage before the grid searches of the upper bound "
                   "(L-inf, L2, L1, where the gradient of s is usable); none: the games alone",
                   choices=("gradient", "none")),
        OptionSpec("features", int, 16, "how many features Player I chooses from in maximum safe radius", minimum=1),
        OptionSpec("partition", str, "grid", "how maximum safe radius cuts the input into `features` features "
                   "for Player I: grid, saliency, superpixels or sift", choices=("grid", "saliency", "superpixels", "sift")),
        OptionSpec("max_frontier", int, 1_000_000, "A*'s frontier limit (memory)", minimum=1),
    ),
)
register(GAME, "nnspec.backends.game:GameBackend")
