"""The weighted-sum objective: alpha at 0 and 1, every term reported, config errors, chunked sums."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from distillab.errors import DistillabError
from distillab.objectives.chunking import chunked_masked_mean
from distillab.objectives.divergences import masked_mean, skew_reverse_kl
from distillab.objectives.objective import build_objective
from distillab.objectives.signals import TeacherFinal, TermInputs
from distillab.objectives.terms import hard_label_ce, soft_label_kd


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    s, t = torch.randn(2, 5, 13, generator=g), torch.randn(2, 5, 13, generator=g)
    targets = torch.randint(0, 13, (2, 5), generator=g)
    return TermInputs(
        student_logits=s,
        targets=targets,
        mask=torch.ones(2, 5, dtype=torch.bool),
        teacher_logits=t,
        teacher_final=TeacherFinal(logits=t),
    )


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_alpha_mixes_soft_and_hard_labels(alpha):
    x = _inputs()
    objective = build_objective(
        {
            "kd": {"_target_": "distillab.objectives.terms.SoftLabelKD", "weight": alpha, "temperature": 2.0},
            "ce": {"_target_": "distillab.objectives.terms.HardLabelCE", "weight": 1 - alpha},
        }
    )
    total, terms = objective(x)
    kd = soft_label_kd(x.teacher_logits, x.student_logits, x.mask, 2.0)
    ce = hard_label_ce(x.student_logits, x.targets, x.mask)
    torch.testing.assert_close(total, alpha * kd + (1 - alpha) * ce)
    assert ("kd" in terms) == (alpha != 0) and ("ce" in terms) == (alpha != 1)
    assert objective.needs_teacher == (alpha != 0)


def test_identical_teacher_and_student_give_zero_kd():
    x = _inputs()
    x = x.replace(teacher_final=TeacherFinal(logits=x.student_logits.clone()))
    total, terms = build_objective(
        {"kd": {"_target_": "distillab.objectives.terms.SoftLabelKD", "weight": 1.0, "temperature": 3.0}}
    )(x)
    assert terms["kd"].abs().item() < 1e-5  # float32 cancellation in the fused forward KL


@pytest.mark.parametrize(
    "terms,message",
    [
        (
            {"kd": {"_target_": "distillab.objectives.terms.SoftLabelKD", "temperature": 0}},
            "temperature must be > 0",
        ),
        (
            {"kd": {"_target_": "distillab.objectives.terms.SoftLabelKD", "temperature": -1.0}},
            "temperature must be > 0",
        ),
        (
            {"kd": {"_target_": "distillab.objectives.terms.SoftLabelKD", "divergence": "kl_forward"}},
            "unknown divergence 'kl_forward'",
        ),
        (
            {"bogus": {}},
            "objective.terms.bogus: no _target_; name the term's class, one of distillab.objectives",
        ),
        ({"kd": {"_target_": "distillab.objectives.terms.Nope"}}, "objective.terms.kd._target_: "),
        (
            {"ce": {"_target_": "distillab.objectives.terms.HardLabelCE", "temprature": 2}},
            "objective.terms.ce: .*temprature",
        ),
        ({"kd": {"_target_": "distillab.models.spec.ModelSpec", "name_or_path": "x"}}, "is not a loss term"),
        (
            {"ce": {"_target_": "distillab.objectives.terms.HardLabelCE", "weight": -1}},
            "objective.terms.ce.weight: must be >= 0",
        ),
        ({}, "objective.terms: empty"),
    ],
)
def test_bad_objective_configs_name_the_key(terms, message):
    with pytest.raises(DistillabError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_objective(terms)


@pytest.mark.parametrize("chunk", [1, 3, 1000])
def test_chunked_masked_mean_matches_the_unchunked_value_and_gradient(chunk):
    g = torch.Generator().manual_seed(0)
    student = torch.randn(2, 5, 11, generator=g, requires_grad=True)
    teacher = torch.randn(2, 5, 11, generator=g)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 2:] = False

    def rows(s, t):
        return skew_reverse_kl(F.log_softmax(t, -1), F.log_softmax(s, -1), 0.1)

    want = masked_mean(rows(student, teacher), mask)
    (want_grad,) = torch.autograd.grad(want, student)
    got = chunked_masked_mean(rows, student, teacher, mask, chunk_tokens=chunk)
    (got_grad,) = torch.autograd.grad(got, student)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got_grad, want_grad)
