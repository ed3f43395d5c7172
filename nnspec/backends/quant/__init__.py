"""DeepQuant quantification by tensor-parallel MADS (paper 000, sections 4-5).

For every centre x of the task, all at once (one model call per iteration for all centres):

1. *violation search*: MADS minimises s over the region, stopping a centre once s < 0;
2. *Lipschitzian metric*: MADS maximises |s(x) - s(y)| / ||x - y|| (the paper's objective w,
   inverted) for the centres without a violation;
3. *witness refinement*: for centres with a violation, a line search along centre -> witness and a
   MADS that minimises the distance subject to s < 0 (extreme barrier).

Every evaluated point in the region feeds both Q^ (the largest slope seen) and the witness tracker
(the closest point with s < 0). The radius estimate is min(d, s(x) / Q^, closest witness); the
closest witness's distance is an upper bound. None of that is a proof: Q^ is a sample maximum. The
proof, where there is one: for a confidence gap on logits (or probabilities, margin 0), the bound engine
(IBP, CROWN or alpha-CROWN, ``nnspec.bounds``) certifies a box radius around each centre (``lower``; a
ball inside it is proven).
L-inf regions are boxes. L1/L2 regions are handled by projection onto the ball (clipped to the
domain, which keeps points feasible) or by the paper's augmented Lagrangian (``constraint=auglag``).

Where s has a usable gradient, a white-box stage runs before the paper's phases (``attack=auto``;
``attack=mads`` keeps the paper's search alone). The modules: ``quantification`` (the task's
state, the evaluation that records every point, the phases in order, the outcomes and their
proofs), ``gradient_phases`` (the white-box stage), ``mads_phases`` (the paper's phases) and
``tracker`` (what each point teaches, the radius estimate).
"""

from nnspec.backends.quant.quantification import QuantBackend

__all__ = ["QuantBackend"]
