"""The bound engine: sound bounds over the converted model's graph, used by every backend.

``graph`` reads the torch.fx graph (one rule per operator), ``engine`` computes IBP and CROWN
bounds of linear objectives over batches of boxes with the relaxations of ``relax``, ``alpha``
optimises CROWN's slopes (alpha-CROWN), ``radius`` turns bounds into certified radii. ``engine_for(model)`` builds the engine once per model and normalisation.
"""

from __future__ import annotations

from nnspec.bounds.engine import BoundEngine
from nnspec.bounds.graph import BoundGraph, Unsupported
from nnspec.bounds.radius import METHODS, certified_radius, margin_objectives

__all__ = ["BoundEngine", "BoundGraph", "Unsupported", "METHODS", "certified_radius", "margin_objectives",
           "engine_for", "choose_method", "support"]


def engine_for(model, linear: bool = True, before_softmax: bool = False, head=None) -> BoundEngine:
    """The model's bound engine (cached on the model); raises ``Unsupported`` with the reason.
    ``linear=False``: the graph as converted, without the max-pools' decomposition into ReLUs,
    which only linear relaxations use (interval bounds through it equal the plain max-pool's, and
    probing the windows costs 60 ms on the DeepGame CNN): for IBP and for ``choose_method``.
    ``before_softmax``: a final softmax left out (``engine.graph.stripped_softmax``), for
    properties read through it. ``head``: a property's ops after the output
    (``softmax.ExpHead``), one engine per head."""
    scale, shift = model._scale, model._shift
    key = (_key(scale), _key(shift), linear, before_softmax, None if head is None else head.key())
    cache = getattr(model, "_bound_engines", None)
    if cache is None:
        cache = model._bound_engines = {}
    if key not in cache:
        try:
            cache[key] = BoundEngine(BoundGraph.from_module(model.module, model.input_shape, scale, shift,
                                                            decompose=linear, before_softmax=before_softmax,
                                                            head=head))
        except Unsupported as err:
            cache[key] = err
    found = cache[key]
    if isinstance(found, Unsupported):
        raise found
    return found


def choose_method(engine: BoundEngine) -> str:
    """The default by network size: CROWN up to CROWN_SCALE (4,096) neurons per layer (a CROWN
    pass costs one backward pass per unstable neuron of each layer it bounds), IBP beyond. Past
    it a radius (``soundness.proved_lower``) is IBP's, then CROWN's for up to ``bound_time``
    seconds from there (convolutions' neurons go back in patches, the radius search one box at a
    time: 17 s per image to the end on the DeepGame MNIST CNN, docs/benchmarks.md); a range's
    enclosure one CROWN pass; a search's start point none. alpha-CROWN costs
    20-40 CROWN passes for a few per cent on the networks measured (docs/benchmarks.md): asked for
    by name (``bound=alpha``), not by default. The same on either graph of ``engine_for``: a
    decomposed max-pool's ReLU layers are at most half its input, which is at most 4,096."""
    return "ibp" if engine.past_crown_scale else "crown"


def support(model) -> str:
    """One line on what the engine can prove about the model (``nnspec inspect``): the default
    method and the nonlinear layers it relaxes, or why there is no bound."""
    from collections import Counter

    failed = (Unsupported, ValueError, RuntimeError)  # (shapes the graph view cannot follow, as in proofs)
    try:
        engine, before = engine_for(model, linear=False), ""
    except failed as err:
        try:
            engine = engine_for(model, linear=False, before_softmax=True)
        except failed:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            return f"none ({reason}): properties are searched, not proved"
        before = " on the logits before its final softmax (for properties read through it)"
    kinds = Counter(op.kind for op in engine.graph.ops if op.kind not in ("input", "affine"))
    layers = ", ".join(f"{k} x{v}" for k, v in sorted(kinds.items())) or "none: the network is affine"
    return f"{METHODS[choose_method(engine)]} by default{before}; nonlinear layers: {layers}"


def _key(value):
    if value is None or isinstance(value, float):
        return value
    return tuple(value.flatten().tolist())
