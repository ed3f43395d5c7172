"""Branch and bound: complete verification of linear objectives over a box, anytime.

A subdomain is the box, possibly cut (input splitting), or the box with some ReLU-like neurons
fixed active (z >= 0) or inactive (z <= 0) and some smooth neurons' (sigmoid, tanh, softplus,
ELU) input intervals halved (neuron splitting, "relu" mode). Unproved subdomains with the lowest
bounds are split first, a batch at a time (one batched call bounds all children); with input
splitting's probes (``found``), a share of each batch (DIVE_SHARE) goes to the boxes whose probes
came closest to a violation instead (the same boxes are split either way, only the order differs).

Input splitting (the default for inputs of at most 16 dimensions, ACAS Xu's 5): each box's
nonlinearity inputs are bounded by forward linear bounds intersected with its parent's, then, only
where the objective is not yet proved, CROWN folded in layer by layer, then a few alpha-CROWN
steps on the objective's slopes (``_input_bounds``); a group of rows that must all be violated is
bounded jointly (``joint_groups``). With at most SMART_DIMS free dimensions every dimension's cut
is bounded and the best kept (``_best_cuts``), otherwise the dimension with the largest |input
coefficient| x width is cut.

ReLU splitting (otherwise), in beta-CROWN's setting (Wang et al. 2021; ``_Fixed``): alpha-CROWN at
the root box gives every nonlinearity input's bounds once; a subdomain keeps them except at its
split neurons, cut at 0, and its bound is a backward pass from the objective with its own slopes
and split multipliers (beta), optimised from its parent's. A smooth neuron's halving
(``relax.halved``) has the layers after it bounded again per subdomain and its interval's two
ends as constraints with multipliers of their own, like a ReLU split's. A property of several
groups (a robustness property's rows) is proved one group at a time. Branching: the unstable neuron with the
largest |coefficient| x relaxation intercept, negative coefficients weighted 5x (in the spirit of
BaBSR). On a dense chain with few unstable neurons at the root, the groups that the search leaves
open after its share of the time go to a complete MILP (HiGHS) with the root's bounds as big-M
constants (``_dense_chain``, ``_milp_groups``), several at once in processes of their own where the
caller has the cores (``_solve_all``).

Sound for the same reasons as CROWN: on a subdomain every split neuron's bound holds, the
relaxations hold on those bounds, the split terms -beta * split * z are <= 0 there, and the
linear bound is minimised over a superset (the box). A child lies inside its parent, so it keeps
the larger of the two bounds; a subdomain whose splits contradict the bounds is empty, so proved.

The package, stage by stage: ``driver`` (``verify``: the root's setting, the groups' searches
in processes, the MILP stage), ``best_first`` (``_search``: one search), ``beta`` (ReLU
splitting's setting, ``_Fixed``, and the bound of a batch of subdomains, ``_bound_fixed``),
``branching`` (which neuron a subdomain splits), ``inputs`` (input splitting's bounds, cuts and
probes), ``milp_stage`` (HiGHS for what the searches leave open, and for leaves), ``domains``
(subdomains, results, the open set handed between processes).
"""

from nnspec.bounds.bab.domains import BabResult
from nnspec.bounds.bab.driver import verify
from nnspec.bounds.bab.inputs import joint_groups

__all__ = ["BabResult", "joint_groups", "verify"]
