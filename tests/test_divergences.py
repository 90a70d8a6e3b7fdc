"""Every divergence against a float64 formula written out by hand, plus the KD/CE terms."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from distillab.objectives import divergences as D
from distillab.objectives.terms import hard_label_ce, soft_label_kd


def _dists(seed=0, shape=(2, 3, 7)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * 2, torch.randn(
        *shape, generator=g, dtype=torch.float64
    ) * 2


def _kl(p, q):  # explicit sum over the vocabulary, float64
    return (p * (p.log() - q.log())).sum(-1)


@pytest.mark.parametrize(
    "name,reference",
    [
        ("forward_kl", lambda p, q: _kl(p, q)),
        ("reverse_kl", lambda p, q: _kl(q, p)),
        ("jsd", lambda p, q: 0.5 * _kl(p, (p + q) / 2) + 0.5 * _kl(q, (p + q) / 2)),
        ("skew_forward_kl", lambda p, q: _kl(p, 0.1 * p + 0.9 * q)),
        ("skew_reverse_kl", lambda p, q: _kl(q, 0.1 * q + 0.9 * p)),
        ("tvd", lambda p, q: 0.5 * (p - q).abs().sum(-1)),
    ],
)
def test_divergence_matches_float64_formula(name, reference):
    t, s = _dists()
    got = D.get_divergence(name)(F.log_softmax(t, -1), F.log_softmax(s, -1))
    want = reference(t.softmax(-1), s.softmax(-1))
    assert got.shape == want.shape == (2, 3)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(D.DIVERGENCES))
def test_identical_distributions_give_zero(name):
    t, _ = _dists()
    logp = F.log_softmax(t, -1)
    torch.testing.assert_close(D.get_divergence(name)(logp, logp), torch.zeros(2, 3, dtype=torch.float64))


def test_kl_direction_and_asymmetry():
    t, s = _dists(1)
    p, q = F.log_softmax(t, -1), F.log_softmax(s, -1)
    assert not torch.allclose(D.forward_kl(p, q), D.reverse_kl(p, q))
    torch.testing.assert_close(D.forward_kl(p, q), D.reverse_kl(q, p))


def test_jsd_is_symmetric_and_limits_hold():
    t, s = _dists(2)
    p, q = F.log_softmax(t, -1), F.log_softmax(s, -1)
    torch.testing.assert_close(D.generalized_jsd(p, q, 0.5), D.generalized_jsd(q, p, 0.5))
    assert torch.all(D.generalized_jsd(p, q, 0.5) <= math.log(2) + 1e-12)
    torch.testing.assert_close(D.generalized_jsd(p, q, 0.0), torch.zeros(2, 3, dtype=torch.float64))
    torch.testing.assert_close(D.skew_forward_kl(p, q, 0.0), D.forward_kl(p, q))
    torch.testing.assert_close(D.skew_reverse_kl(p, q, 0.0), D.reverse_kl(p, q))


def test_near_zero_probabilities_stay_finite_with_finite_gradients():
    teacher = torch.tensor([[0.0, -1e9, 5.0]], dtype=torch.float64)  # one ~zero-probability entry
    student = torch.tensor([[1.0, 2.0, -1e9]], dtype=torch.float64, requires_grad=True)
    for name in D.DIVERGENCES:
        value = D.get_divergence(name)(F.log_softmax(teacher, -1), F.log_softmax(student, -1)).sum()
        (grad,) = torch.autograd.grad(value, student)
        assert torch.isfinite(value) and torch.isfinite(grad).all(), name


def test_masked_mean_ignores_padding():
    values = torch.tensor([[1.0, 2.0, 100.0], [3.0, 100.0, 100.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    assert D.masked_mean(values, mask).item() == pytest.approx(2.0)


def test_soft_label_kd_is_t_squared_times_masked_forward_kl():
    t, s = _dists(3, (2, 4, 11))
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    T = 2.5
    p, q = (t / T).softmax(-1), (s / T).softmax(-1)
    per_token = (p * (p.log() - q.log())).sum(-1)
    want = T**2 * per_token[mask].mean()
    torch.testing.assert_close(soft_label_kd(t, s, mask, T).double(), want, rtol=1e-5, atol=1e-6)


def test_hard_label_ce_matches_formula_and_ignores_masked_targets():
    t, _ = _dists(4, (2, 4, 11))
    targets = torch.tensor([[1, 2, 3, -100], [4, 5, -100, -100]])
    mask = targets != -100
    logp = t.log_softmax(-1)
    want = -torch.stack([logp[b, i, targets[b, i]] for b in range(2) for i in range(4) if mask[b, i]]).mean()
    torch.testing.assert_close(hard_label_ce(t, targets, mask).double(), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_fused_forward_kl_from_logits_matches_the_reference(temperature):
    t, s = _dists(5, (2, 3, 17))
    want = D.forward_kl(F.log_softmax(t / temperature, -1), F.log_softmax(s / temperature, -1))
    torch.testing.assert_close(
        D.forward_kl_from_logits(t, s, temperature).double(), want, rtol=1e-5, atol=1e-6
    )
    t[0, 0, 3] = float("-inf")  # a masked vocabulary entry in the teacher stays finite
    assert torch.isfinite(D.forward_kl_from_logits(t, s, temperature)).all()


def test_fused_forward_kl_gradient_matches_the_reference():
    t, s = _dists(6, (2, 3, 17))
    s1, s2 = s.clone().requires_grad_(), s.clone().requires_grad_()
    D.forward_kl_from_logits(t, s1, 2.0).sum().backward()
    D.forward_kl(F.log_softmax(t / 2.0, -1), F.log_softmax(s2 / 2.0, -1)).sum().backward()
    torch.testing.assert_close(s1.grad, s2.grad)
