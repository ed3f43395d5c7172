"""The closest violation within an activation region, by linear programming (L-inf and L1).

On a network that is a chain of affine maps and ReLUs (``nnspec.bounds.exact.chain_layers``),
fixing every ReLU's phase (active or inactive) makes the network affine: inside that activation
region the logits are y = Y x + c and every pre-activation z = Z x + d, so the closest point of the
region where label t beats label l is a linear program:

    min r   s.t.  |x_i - x0_i| <= r,  lo <= x <= hi,  y_t(x) - y_l(x) >= gap,
                  z_k(x) >= 0 for active neurons, z_k(x) <= 0 for inactive ones

(L1: min sum e_i with |x_i - x0_i| <= e_i instead).

A gradient walk ends near such a point, not at it (its steps are annealed, not exact). ``polish``
starts from a witness's region, solves the LP, and where the optimum is held by phase
constraints (their dual values are nonzero) flips those neurons and solves again in the
neighbouring region: a descent over regions that stops at a point the LP cannot improve. Neurons
whose phase is fixed over the whole box of the starting distance (interval bounds) need no row:
r never exceeds that distance, so their phase holds anyway. Every candidate is only a candidate:
the caller evaluates it on the model, which confirms or drops it like any other point.
"""

from __future__ import annotations

import numpy as np

from nnspec.solvers.milp import interval_bounds

ITERATIONS = 3  # LPs per polish: the first gives most of the gain (docs/benchmarks.md, benchmark 10)
DUAL_TOL = 1e-9  # a phase row with a dual value beyond this holds the optimum: its neuron is flipped


class RegionLP:
    """The chain's layers [(W, b), ...] (a ReLU after every one but the last)."""

    def __init__(self, layers: list[tuple[np.ndarray, np.ndarray]]):
        self.layers = [(np.asarray(w, dtype=np.float64), np.asarray(b, dtype=np.float64)) for w, b in layers]
        self.n = self.layers[0][0].shape[1]

    def preacts(self, x: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """Every ReLU's input at x (n,), and the outputs."""
        zs, a = [], x
        for w, b in self.layers[:-1]:
            z = w @ a + b
            zs.append(z)
            a = np.maximum(z, 0.0)
        w, b = self.layers[-1]
        return zs, w @ a + b

    def _affine(self, phases: list[np.ndarray]):
        """The region's affine maps: per layer (Z, d) of the pre-activations, then (Y, c)."""
        A, c = np.eye(self.n), np.zeros(self.n)
        maps = []
        for (w, b), on in zip(self.layers[:-1], phases):
            Z, d = w @ A, w @ c + b
            maps.append((Z, d))
            A, c = Z * on[:, None], d * on
        w, b = self.layers[-1]
        return maps, (w @ A, w @ c + b)

    def polish(self, x0: np.ndarray, witness: np.ndarray, lo: np.ndarray, hi: np.ndarray, label: int,
               target: int, gap: float = 0.0, iterations: int = ITERATIONS, norm: str = "linf") -> list[np.ndarray]:
        """Candidates (each (n,)), no farther from ``x0`` than ``witness`` in ``norm`` (linf or l1),
        where output ``target`` exceeds output ``label`` by at least ``gap``, inside [lo, hi] (a
        coordinate with lo = hi stays there): each the LP optimum of one region, from the
        witness's onwards."""
        from scipy.optimize import linprog

        if norm not in ("linf", "l1"):
            raise ValueError(f"the region LP takes linf or l1 balls, not {norm}")
        x0, witness = np.asarray(x0, np.float64), np.asarray(witness, np.float64)
        lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
        n = self.n
        offset = np.abs(witness - x0)
        r_max = float(offset.max() if norm == "linf" else offset.sum())
        zs, _ = self.preacts(witness)
        phases = [z > 0 for z in zs]
        # the ball lies in the box of half-width r_max in either norm: phases fixed on that box hold
        box = interval_bounds(self.layers, np.maximum(lo, x0 - r_max), np.minimum(hi, x0 + r_max))[:-1]
        free = [(z_lo < 0) & (z_hi > 0) for z_lo, z_hi in box]  # neurons whose phase the box does not fix
        # variables: x (n), then r (L-inf: one, |x_i - x0_i| <= r) or e (L1: n, |x_i - x0_i| <= e_i)
        m = 1 if norm == "linf" else n
        eye = np.eye(n)
        dist = -np.ones((n, 1)) if norm == "linf" else -eye
        fixed_rows = [np.hstack([eye, dist]), np.hstack([-eye, dist])]
        fixed_rhs = [x0, -x0]
        if norm == "l1":  # sum e <= r_max: inside the box the pruned phases hold on
            fixed_rows.append(np.hstack([np.zeros((1, n)), np.ones((1, n))]))
            fixed_rhs.append([r_max])
        head = sum(len(r) for r in fixed_rhs) + 1  # rows before the phase rows (the margin's last)
        cost = np.r_[np.zeros(n), np.ones(m)]
        bounds = list(zip(lo, hi)) + [(0.0, r_max)] * m
        found: list[np.ndarray] = []
        for _ in range(iterations):
            maps, (Y, c) = self._affine(phases)
            rows = fixed_rows + [np.append(-(Y[target] - Y[label]), np.zeros(m))[None]]
            rhs = fixed_rhs + [[c[target] - c[label] - gap]]
            owners = []  # per phase row: (layer, neuron)
            for k, ((Z, d), on, f) in enumerate(zip(maps, phases, free)):
                idx = np.nonzero(f)[0]
                sign = np.where(on[idx], -1.0, 1.0)  # active: -z <= 0; inactive: z <= 0
                rows.append(np.hstack([Z[idx] * sign[:, None], np.zeros((len(idx), m))]))
                rhs.append(-d[idx] * sign)
                owners.extend((k, j) for j in idx)
            res = linprog(cost, A_ub=np.vstack(rows), b_ub=np.concatenate(rhs), bounds=bounds, method="highs")
            if res.status != 0:  # the region has no such point (or the solver gave up)
                break
            found.append(res.x[:n])
            duals = res.ineqlin.marginals[head:]
            held = np.nonzero(np.abs(duals) > DUAL_TOL)[0]
            if held.size == 0:  # no phase constraint holds the optimum: nothing closer nearby
                break
            phases = [p.copy() for p in phases]
            for i in held:
                k, j = owners[i]
                phases[k][j] = ~phases[k][j]
        return found
