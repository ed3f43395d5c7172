"""Property expressions against hand-computed values; batched over P centres x K points."""

from __future__ import annotations

import math

import pytest
import torch

from nnspec.properties import expressions as ex

LOGITS = torch.tensor([[[3.0, 1.0, 0.0], [1.0, 2.0, 0.0]], [[0.0, 2.0, 1.0], [0.0, 2.0, 3.0]]])
CENTRES = ex.Centres(labels=torch.tensor([0, 1]), outputs=torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]]))


def test_untargeted_gap_uses_the_best_other_label_at_each_point():
    s = ex.ConfidenceGap("untargeted", None, 0.0, "logits").bind(CENTRES, True)(LOGITS)
    assert s.tolist() == [[2.0, -1.0], [1.0, -1.0]]  # a third label overtaking is caught


def test_targeted_and_least_likely_and_margin():
    s = ex.ConfidenceGap("label", 2, 0.5, "logits").bind(CENTRES, True)(LOGITS)
    assert s.tolist() == [[2.5, 0.5], [0.5, -1.5]]
    s = ex.ConfidenceGap("least_likely", None, 0.0, "logits").bind(CENTRES, True)(LOGITS)
    assert s.tolist() == [[3.0, 1.0], [2.0, 2.0]]  # least likely at the centres: 2 and 0


def test_gap_on_probabilities_applies_softmax_only_to_logits():
    p = torch.softmax(LOGITS, dim=-1)
    a = ex.ConfidenceGap("label", 1, 0.0, "probabilities").bind(CENTRES, True)(LOGITS)
    b = ex.ConfidenceGap("label", 1, 0.0, "probabilities").bind(CENTRES, False)(p)
    assert torch.allclose(a, b)
    assert a[0, 0] == pytest.approx(float(p[0, 0, 0] - p[0, 0, 1]))


def test_kl_to_uniform_matches_the_paper_formula():
    s = ex.KLDivergence(0.3, None).bind(CENTRES, True)(LOGITS)
    p = torch.softmax(LOGITS, dim=-1)
    paper = -(torch.log(3 * p)).mean(dim=-1) - 0.3  # -(1/m) sum log(m p_l) - eps
    assert torch.allclose(s, paper, atol=1e-6)
    uniform = ex.KLDivergence(0.0, None).bind(CENTRES, True)(torch.zeros(2, 1, 3))
    assert torch.allclose(uniform, torch.zeros(2, 1), atol=1e-7)


def test_kl_to_a_reference_is_the_true_divergence():
    ref = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    c = ex.Centres(CENTRES.labels, CENTRES.outputs, ref)
    s = ex.KLDivergence(0.0, "input").bind(c, True)(LOGITS)
    q, p = torch.softmax(ref, -1)[:, None, :], torch.softmax(LOGITS, -1)
    assert torch.allclose(s, (q * (q / p).log()).sum(-1))
    same = ex.KLDivergence(0.0, "input").bind(c, True)(ref[:, None, :])
    assert torch.allclose(same, torch.zeros(2, 1), atol=1e-6)


def test_thresholds_and_values():
    below = ex.OutputThreshold("prob", None, "<", 0.5).bind(CENTRES, True)(LOGITS)
    p = torch.softmax(LOGITS, -1)
    assert below[0, 0] == pytest.approx(0.5 - float(p[0, 0, 0]))
    above = ex.OutputThreshold("logit", 2, ">", 1.0).bind(CENTRES, True)(LOGITS)
    assert above.tolist() == [[-1.0, -1.0], [0.0, 2.0]]
    value = ex.OutputValue("logit", None, 0.1).bind(CENTRES, True)(LOGITS)
    assert value.tolist() == [[3.0, 1.0], [2.0, 2.0]]
    assert not math.isnan(float(below.sum()))
