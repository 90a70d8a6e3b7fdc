"""KD with the teacher's logits formed a chunk of positions at a time equals KD on full logits."""

from __future__ import annotations

import pytest
import torch

from distillab.models.tiny import build_tiny
from distillab.objectives.chunked_kd import chunked_soft_label_kd
from distillab.objectives.divergences import get_divergence
from distillab.objectives.objective import build_objective
from distillab.objectives.terms import soft_label_kd
from distillab.training.distill_module import DistillModule


@pytest.mark.parametrize("divergence", ["forward_kl", "reverse_kl", "jsd"])
def test_value_and_gradient_equal_kd_on_full_logits(divergence):
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False)
    hidden = torch.randn(2, 7, 16)
    mask = torch.rand(2, 7) > 0.3
    student = (torch.randn(2, 7, 50) * 3).requires_grad_(True)
    fn = get_divergence(divergence)
    chunked = chunked_soft_label_kd(student, hidden, head, mask, 2.0, fn, chunk_tokens=3)
    (grad_chunked,) = torch.autograd.grad(chunked * 1.7, student)
    with torch.no_grad():
        teacher_logits = head(hidden)
    full = soft_label_kd(teacher_logits, student, mask, 2.0, fn)
    (grad_full,) = torch.autograd.grad(full * 1.7, student)
    assert chunked.item() == pytest.approx(full.item(), rel=1e-5)
    torch.testing.assert_close(grad_chunked, grad_full, rtol=1e-4, atol=1e-7)
    assert grad_chunked[~mask].abs().max() == 0  # masked positions get no gradient


def test_value_only_without_gradients():
    head = torch.nn.Linear(8, 20, bias=False)
    with torch.no_grad():
        value = chunked_soft_label_kd(
            torch.randn(1, 5, 20), torch.randn(1, 5, 8), head, torch.ones(1, 5, dtype=torch.bool), 1.0
        )
    assert value.item() > 0


def test_a_kd_step_never_forms_the_teachers_full_logits():
    student, tok = build_tiny("llama")
    teacher, _ = build_tiny("llama", seed=1)
    objective = build_objective(
        {
            "kd": {
                "_target_": "distillab.objectives.terms.SoftLabelKD",
                "weight": 0.5,
                "temperature": 2.0,
                "chunk_tokens": 8,
            },
            "ce": {"_target_": "distillab.objectives.terms.HardLabelCE", "weight": 0.5},
        }
    )
    module = DistillModule(student, objective, teacher)
    rows_seen = []
    teacher.lm_head.register_forward_hook(lambda m, args, out: rows_seen.append(args[0].shape[:-1]))
    ids = torch.randint(0, len(tok), (2, 16))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    module.log = lambda *a, **k: None
    student.train()
    module.training_step(batch, 0)  # the first step also checks once that head(hidden) gives the logits
    assert module._head_checked is True
    rows_seen.clear()
    loss = module.training_step(batch, 1)
    loss.backward()
    assert rows_seen and all(shape == torch.Size([8]) or shape[0] <= 8 for shape in rows_seen)
    assert sum(shape[0] for shape in rows_seen) == 2 * 15  # each trained position once, 8 at a time
    assert student.lm_head.weight.grad.abs().sum() > 0


def test_a_teacher_that_rescales_its_logits_runs_whole():
    # Granite / Cohere multiply logits after the head: head(hidden) would not be the teacher's distribution
    student, tok = build_tiny("llama")
    teacher, _ = build_tiny("llama", seed=1)
    forward = teacher.forward

    def rescaled(*args, **kwargs):
        out = forward(*args, **kwargs)
        out.logits = out.logits * 0.5
        return out

    teacher.forward = rescaled
    module = DistillModule(
        student,
        build_objective({"kd": {"_target_": "distillab.objectives.terms.SoftLabelKD", "weight": 1.0}}),
        teacher,
    )
    module.log = lambda *a, **k: None
    ids = torch.randint(0, len(tok), (2, 16))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    seen = []
    teacher.lm_head.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[:-1]))
    module.training_step(batch, 0)
    assert module._head_checked is False
    assert seen[-1] == torch.Size([2, 16])  # the step ran the whole teacher (all positions at once)
