"""Properties read through the softmax (probability thresholds, probability gaps with a margin,
KL divergences): their requirements on the logits, the rows that prove them, and the certified
radii of every method against exact radii on two-input networks (a dense grid)."""

import copy
import math

import pytest
import torch
from torch import nn

from bench.softmax_bounds import grid_min as _grid_min
from bench.softmax_bounds import grid_net as _net
from bench.softmax_bounds import grid_radius as _grid_radius
from nnspec.backends.soundness import proved_lower
from nnspec.bounds import softmax
from nnspec.bounds.softmax import Constant, ExpSumBelow, LogSumExpAbove
from nnspec.models.model import Model
from nnspec.properties import expressions as ex

M = 4
EXPRESSIONS = {
    "p >= 0.5": ex.OutputThreshold("prob", None, ">=", 0.5),
    "p(2) > 0.2": ex.OutputThreshold("prob", 2, ">", 0.2),
    "p(1) <= 0.3": ex.OutputThreshold("prob", 1, "<=", 0.3),
    "p < 0.9": ex.OutputThreshold("prob", None, "<", 0.9),
    "kl > 0.2": ex.KLDivergence(0.2, None),
    "kl to reference > 0.5": ex.KLDivergence(0.5, "input"),
    "gap 0.3": ex.ConfidenceGap("untargeted", None, 0.3, "probabilities"),
    "gap to 2, 0.2": ex.ConfidenceGap("label", 2, 0.2, "probabilities"),
    "gap to least likely, 0.4": ex.ConfidenceGap("least_likely", None, 0.4, "probabilities"),
}
# margins below 0 drop terms: the requirement implies the property, not the converse
SUFFICIENT = {"gap -0.1": ex.ConfidenceGap("untargeted", None, -0.1, "probabilities")}


def _s(expr, z: torch.Tensor, label: int, centre: torch.Tensor, reference: torch.Tensor | None = None):
    """The expression on logits z (N, m), as the searches compute it."""
    centres = ex.Centres(torch.tensor([label]), centre[None], None if reference is None else reference[None])
    return expr.bind(centres, True)(z[None])[0]


def _value(req, z: torch.Tensor) -> torch.Tensor:
    """A requirement's left side at logits z (N, m), exactly (float64)."""
    if isinstance(req, Constant):
        return torch.full((len(z),), 1.0 if req.holds else -1.0, dtype=torch.float64)
    if isinstance(req, LogSumExpAbove):
        return torch.logsumexp(z, dim=1) - z @ req.a + req.c
    bonus = 0.0 if req.bonus is None else (req.bonus[1] * torch.exp(z @ req.bonus[0].T)).sum(dim=1)
    return req.c + bonus - (req.w * torch.exp(z @ req.D.T)).sum(dim=1)


def _logits(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scale = torch.tensor([0.3, 1.0, 3.0, 10.0], dtype=torch.float64)[torch.randint(0, 4, (n, 1), generator=g)]
    return torch.randn(n, M, generator=g, dtype=torch.float64) * scale


@pytest.mark.parametrize("name", list(EXPRESSIONS) + list(SUFFICIENT))
def test_the_requirements_hold_exactly_where_the_property_does(name):
    expr = {**EXPRESSIONS, **SUFFICIENT}[name]
    z = _logits(20_000, 1)
    centre = z[0]
    label = int(centre.argmax())
    reference = torch.tensor([0.5, 1.0, -1.0, 0.2], dtype=torch.float64)
    reqs = softmax.requirements(expr, M, label, centre, torch.softmax(reference, 0))
    holds = torch.stack([_value(r, z) >= 0 for r in reqs]).all(dim=0)
    s = _s(expr, z, label, centre, reference)
    clear = s.abs() > 1e-9  # (the boundary itself is the rounding's)
    assert bool((s[holds & clear] >= 0).all())  # sound: where they hold, the property does
    if name in EXPRESSIONS:
        assert bool((holds[clear] == (s[clear] >= 0)).all())
    assert 0.02 < float((s >= 0).double().mean()) < 0.98  # both sides were sampled


def test_thresholds_past_the_ends_of_0_1_are_constants():
    z = torch.zeros(M, dtype=torch.float64)
    assert softmax.requirements(ex.OutputThreshold("prob", 0, "<=", 1.0), M, 0, z) == [Constant(True)]
    assert softmax.requirements(ex.OutputThreshold("prob", 0, "<", 0.0), M, 0, z) == [Constant(False)]
    assert softmax.requirements(ex.OutputThreshold("prob", 0, ">", 0.0), M, 0, z) == [Constant(True)]
    assert softmax.requirements(ex.OutputThreshold("prob", 0, ">=", 1.0), M, 0, z) == [Constant(False)]
    assert softmax.requirements(ex.ConfidenceGap("label", 1, -1.5, "probabilities"), M, 0, z) == [Constant(True)]


@pytest.mark.parametrize("name", list(EXPRESSIONS) + list(SUFFICIENT))
def test_a_row_that_holds_proves_its_requirement(name):
    """At random logits, a group with a row > 0 (over the logits and the head's capped
    exponentials) has its requirement hold; a sum's row is the requirement itself, less the
    float32 guard."""
    expr = {**EXPRESSIONS, **SUFFICIENT}[name]
    z = _logits(20_000, 2)
    centre = z[0]
    label = int(centre.argmax())
    reqs = softmax.requirements(expr, M, label, centre, torch.softmax(torch.arange(M, dtype=torch.float64), 0))
    rows = softmax.rows(reqs, centre)
    y = z if rows.head is None else rows.head(z)
    values = y @ rows.C.T + rows.d
    groups = [g for g, r in enumerate(r for r in reqs if not (isinstance(r, Constant) and r.holds))]
    active = [r for r in reqs if not (isinstance(r, Constant) and r.holds)]
    assert int(rows.groups.max()) + 1 == max(1, len(active))
    proved = 0
    for g, req in zip(groups, active):
        best = values[:, rows.groups == g].max(dim=1).values
        truth = _value(req, z)
        assert bool((truth[best > 0] >= 0).all())
        proved += int((best > 0).sum())
        if isinstance(req, ExpSumBelow):  # exact: c e^(-2 delta) - sum, where no cap is reached
            delta = softmax.FLOAT32_ROWS * 2.0 ** -23 * (1 + float(centre.abs().max()))
            exact = req.c * math.exp(-2 * delta) - (req.w * torch.exp(z @ req.D.T)).sum(dim=1)
            under = (z @ req.D.T < float(rows.head.caps.min())).all(dim=1)
            assert torch.allclose(best[under], exact[under], rtol=1e-9, atol=1e-9)
    assert proved > 0


def _radii(seed: int, expr, methods) -> dict[str, float]:
    """Each method's certified radius / the grid radius on the seed's 2-input net, every one
    checked on the grid (branch and bound gets the grid radius as its known upper bound)."""
    net = _net(seed)
    model = Model(net, (2,), M)
    x0 = torch.rand(2, generator=torch.Generator().manual_seed(100 + seed))
    with torch.no_grad():
        centre = net(x0[None])[0].double()
    label = int(centre.argmax())
    exact = _grid_radius(net, expr, x0.double(), label, 2.0)
    assert 0 < exact < 2.0
    box = (torch.full((2,), -10.0), torch.full((2,), 10.0))
    radii = {}
    for method in methods:
        r, note, _ = proved_lower(model, expr, True, x0, label, centre, 2.0, *box, method=method, time_limit=6.0,
                                  known_upper=exact * 1.001)
        assert r is not None and "through rows over the logits" in note
        assert r <= exact * 1.001 and _grid_min(net, expr, x0.double(), r, label) >= -1e-9, (method, r, exact)
        radii[method] = r / exact
    return radii


# (seed, expression): the grid radius is below the ball's 2; CROWN's share of it (measured 0.43-0.86)
# and branch and bound's (measured 0.9977-0.9999, in 0.7-2.3 s of the 6 s given) are asserted with margins
CASES = [(0, "p >= 0.5"), (2, "kl > 0.2"), (5, "gap to 2, 0.2")]


@pytest.mark.parametrize("seed, name", CASES)
def test_certified_radii_through_the_softmax_are_sound_and_close_to_the_grid(seed, name):
    radii = _radii(seed, EXPRESSIONS[name], ("ibp", "crown", "alpha", "bab"))
    assert 0 < radii["ibp"] <= radii["crown"] + 1e-9
    assert radii["crown"] > 0.4
    assert radii["bab"] > 0.9 and radii["bab"] >= radii["crown"] - 1e-9, radii


def test_a_model_that_gives_probabilities_is_proved_as_its_logits_are():
    """A final softmax is left out and the same rows prove the same radius; probabilities from a
    sigmoid are the outputs themselves, where a threshold is a linear row."""
    expr = EXPRESSIONS["p >= 0.5"]
    net = _net(0)
    x0 = torch.rand(2, generator=torch.Generator().manual_seed(100))
    with torch.no_grad():
        z = net(x0[None])[0].double()
    label = int(z.argmax())
    box = (torch.full((2,), -10.0), torch.full((2,), 10.0))
    logits, _, _ = proved_lower(Model(net, (2,), M), expr, True, x0, label, z, 2.0, *box, method="crown")
    probs, note, _ = proved_lower(Model(nn.Sequential(net, nn.Softmax(dim=1)), (2,), M), expr, False, x0, label,
                                  torch.softmax(z, 0), 2.0, *box, method="crown")
    assert 0 < logits < 2.0 and probs == pytest.approx(logits, rel=1e-9) and "through rows over the logits" in note
    sigmoid = nn.Sequential(net, nn.Sigmoid())
    with torch.no_grad():
        p = sigmoid(x0[None])[0].double()
    label = int(p.argmax())
    threshold = ex.OutputThreshold("prob", None, ">=", float(p[label]) - 0.1)
    r, note, _ = proved_lower(Model(sigmoid, (2,), M), threshold, False, x0, label, p, 2.0, *box, method="crown")
    assert 0 < r < 2.0 and "through rows" not in note
    a = torch.linspace(-r, r, 201, dtype=torch.float64)
    X = torch.stack(torch.meshgrid(a, a, indexing="ij"), -1).reshape(-1, 2) + x0.double()
    with torch.no_grad():
        assert float(copy.deepcopy(sigmoid).double()(X)[:, label].min()) >= threshold.threshold


def test_kl_to_a_reference_input_and_the_milp_mode_through_a_spec():
    import nnspec

    net = _net(3)
    x = torch.rand(2, 2, generator=torch.Generator().manual_seed(7))
    records = nnspec.check_module(net, x, "uncertainty kl to input 1 > 0.01 within linf(0.001) using mads(budget=200)",
                                  domain=(-5.0, 5.0))
    first = records[0]  # (input 1's KL to itself is 0: violated at the centre)
    assert first.verdict == "proven" and first.bounds["lower"] == pytest.approx(0.001)
    milp = nnspec.check_module(net, x[:1], "reachability prob(0) < 0.999 within linf(0.001) "
                               "using mads(budget=200, bound=milp)", domain=(-5.0, 5.0))[0]
    assert milp.bounds["lower"] is None and any("MILP mode reads logits" in n for n in milp.notes)


@pytest.mark.parametrize("fn", ["logit", "prob"])
@pytest.mark.parametrize("method", ["ibp", "crown", "alpha"])
def test_a_quantity_gets_an_interval_that_holds_its_range(fn, method):
    """``reachability range``: the proved enclosure holds the grid's [min, max] of the value over
    the box; CROWN's and alpha-CROWN's are at most 1.5 times as wide on this small net (measured
    1.00-1.13)."""
    from nnspec.backends.soundness import proved_range

    net = _net(4)
    x0 = torch.rand(2, generator=torch.Generator().manual_seed(104))
    r = 0.1
    a = torch.linspace(-r, r, 301, dtype=torch.float64)
    X = torch.stack(torch.meshgrid(a, a, indexing="ij"), -1).reshape(-1, 2) + x0.double()
    with torch.no_grad():
        z = copy.deepcopy(net).double()(X)
    for index in range(M):
        values = z[:, index] if fn == "logit" else torch.softmax(z, dim=1)[:, index]
        expr = ex.OutputValue(fn, index, 0.01)
        found, note = proved_range(Model(net, (2,), M), expr, True, x0, 0, r, torch.full((2,), -10.0),
                                   torch.full((2,), 10.0), method=method)
        low, high = found
        assert low <= float(values.min()) and float(values.max()) <= high, (index, found)
        if method != "ibp":
            assert high - low < 1.5 * float(values.max() - values.min()) + 1e-6, (index, found)
        assert "stays within" in note
    if fn == "prob":  # a model that ends in its softmax: the same enclosure
        soft = Model(nn.Sequential(net, nn.Softmax(dim=1)), (2,), M)
        again, _ = proved_range(soft, expr, False, x0, 0, r, torch.full((2,), -10.0), torch.full((2,), 10.0),
                                method=method)
        assert again == pytest.approx(found, rel=1e-9)


def test_a_range_record_carries_its_enclosure_into_the_report():
    import nnspec
    from nnspec.report.html import render_html
    from nnspec.results.run import RunResult

    net = _net(4)
    x = torch.rand(1, 2, generator=torch.Generator().manual_seed(104))
    spec = "reachability range prob(1) tolerance 0.01 within linf(0.05) using mads(budget=300)"
    record = nnspec.check_module(net, x, spec, domain=(-5.0, 5.0))[0]
    low, high = record.value_bounds
    assert low <= record.value_range[0] <= record.value_range[1] <= high
    none = nnspec.check_module(net, x, spec.replace("budget=300", "budget=300, bound=none"), domain=(-5.0, 5.0))[0]
    assert none.value_bounds is None and none.value_range is not None

    def page(r):
        return render_html(RunResult.from_json({"schema": "nnspec.results/1", "nnspec_version": "0.1.0",
                                                "created": "now", "records": [r.to_json()], "models": [],
                                                "specs": []}))
    assert "proved enclosure" in page(record) and "proved enclosure" not in page(none)


def _formula(text: str):
    from nnspec.semantics import lower
    from nnspec.syntax.parser import parse_text

    spec = lower(parse_text(f"property p: always {text} within linf(0.1)\ninputs \"x.npy\"", "t.nnspec"))
    return spec.properties[0].expression


def test_a_linear_condition_on_several_probabilities_is_a_sufficient_requirement():
    """c @ p + d >= 0 as a sum of exponentials (``softmax._probability_atom``): where it holds the
    condition does, and where it is marked exact, the converse too."""
    g = torch.Generator().manual_seed(5)
    z = _logits(4_000, 5)
    checked = exact = 0
    for _ in range(60):
        c = torch.randn(M, generator=g, dtype=torch.float64) * (torch.rand(M, generator=g) < 0.7)
        d = float(torch.randn(1, generator=g, dtype=torch.float64)) * 0.5
        req = softmax._probability_atom(c, d, 0, z[0])
        truth = torch.softmax(z, dim=1) @ c + d
        holds = _value(req, z) >= 0
        clear = truth.abs() > 1e-9
        assert bool((truth[holds & clear] >= 0).all())
        checked += int(holds.sum())
        if isinstance(req, ExpSumBelow) and req.exact or isinstance(req, Constant):
            assert bool((holds[clear] == (truth[clear] >= 0)).all())
            exact += 1
    assert checked > 1000 and exact > 10


FORMULAS = {
    "prob(label) > 0.6 or prob(2) < 0.1": 2,
    "2 * prob(1) + prob(3) < 0.9 and y[label] > y[1]": 3,
}


@pytest.mark.parametrize("text", FORMULAS)
def test_output_formulas_over_probabilities_are_proved_close_to_the_grid(text):
    """Atoms over probabilities refuted through the softmax, beside atoms over the logits
    (measured: CROWN 0.28 and 0.75 of the grid radius, branch and bound 0.999 in 2-3 s of the 6 s given)."""
    radii = _radii(FORMULAS[text], _formula(text), ("crown", "bab"))
    assert radii["crown"] > 0.2 and radii["bab"] > 0.9, radii
