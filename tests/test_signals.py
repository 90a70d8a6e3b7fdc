"""Terms declare the signals they read; the step computes exactly their union, and nothing is skipped
silently: a signal a term declared but the batch lacks is an error, a signal it did not declare is
not visible to it, and the only batches a term sits out are those its signals do not exist on."""

from __future__ import annotations

import pytest
import torch

from distillab.errors import DistillabError
from distillab.models.tiny import build_tiny
from distillab.objectives.objective import build_objective
from distillab.objectives.signals import (
    MASK,
    STUDENT_LOGITS,
    TARGETS,
    TEACHER_FINAL,
    TEACHER_TOPK,
    TermInputs,
)
from distillab.objectives.terms import Term
from distillab.training import signal_providers
from distillab.training.distill_module import DistillModule

CE = {"_target_": "distillab.objectives.terms.HardLabelCE"}
KD = {"_target_": "distillab.objectives.terms.SoftLabelKD", "temperature": 2.0}
KD_CACHED = {"_target_": "distillab.objectives.terms.CachedTopKKD"}

# A signal nobody computes yet: the student's logit norm per position. Its provider and the term
# that reads it live in this file, which is all a new signal takes.
LOGIT_NORM = "student_logit_norm"


@signal_providers.provides(LOGIT_NORM)
def _logit_norm(step):
    _logit_norm.calls += 1
    return step.get(STUDENT_LOGITS).norm(dim=-1)


_logit_norm.calls = 0


class LogitNormPenalty(Term):
    """Mean squared logit norm over real positions (a made-up regulariser)."""

    reads = frozenset({LOGIT_NORM, MASK})

    def forward(self, inputs):
        return (inputs.student_logit_norm[inputs.mask] ** 2).mean()


class ReadsWhatItDidNotDeclare(Term):
    reads = frozenset({STUDENT_LOGITS, MASK})

    def forward(self, inputs):
        return inputs.targets.float().mean()


def _batch():
    ids = torch.tensor([[5, 9, 3, 7, 2, 8], [4, 6, 1, 3, 0, 0]])
    attention = (ids != 0).long()
    return {"input_ids": ids, "attention_mask": attention, "labels": ids.masked_fill(attention == 0, -100)}


@pytest.fixture
def computed(monkeypatch):
    """The names of the signals each step computed, in order."""
    seen: list[str] = []
    for name, provider in list(signal_providers.PROVIDERS.items()):

        def spy(step, name=name, provider=provider):
            seen.append(name)
            return provider(step)

        monkeypatch.setitem(signal_providers.PROVIDERS, name, spy)
    return seen


def test_a_term_with_a_new_signal_trains_through_the_step(computed):
    student, _ = build_tiny("llama", seed=1)
    objective = build_objective({"norm": {"_target_": f"{__name__}.LogitNormPenalty", "weight": 0.01}})
    module = DistillModule(student, objective)
    batch = _batch()
    _logit_norm.calls = 0
    loss = module._step(batch, "train")
    with torch.no_grad():
        logits = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    expected = 0.01 * (logits.norm(dim=-1)[mask] ** 2).mean()
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    assert _logit_norm.calls == 1 and sorted(set(computed)) == sorted(
        {LOGIT_NORM, MASK, TARGETS, STUDENT_LOGITS}
    )
    loss.backward()
    assert student.lm_head.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "terms, split, expected",
    [
        ({"ce": CE}, "train", {STUDENT_LOGITS, TARGETS, MASK}),
        ({"kd": KD}, "train", {STUDENT_LOGITS, TEACHER_FINAL, TARGETS, MASK}),
        ({"kd": KD, "ce": CE}, "val", {STUDENT_LOGITS, TEACHER_FINAL, TARGETS, MASK}),
        ({"kd_cached": KD_CACHED}, "val", {STUDENT_LOGITS, TARGETS, MASK}),  # validation blocks: no cache
    ],
)
def test_the_step_computes_exactly_what_the_terms_read(computed, terms, split, expected):
    """(TARGETS: the mask is built from the shifted labels.)"""
    teacher, _ = build_tiny("llama", seed=0)
    student, _ = build_tiny("llama", seed=1)
    objective = build_objective(terms)
    module = DistillModule(student, objective, teacher if objective.needs_teacher else None)
    module.on_validation_epoch_start()
    module._step(_batch(), split)
    assert set(computed) == expected
    assert len(computed) == len(set(computed)), f"a signal computed twice: {computed}"


def test_kd_cached_on_a_training_batch_without_the_cache_is_an_error_not_a_skip():
    student, _ = build_tiny("llama", seed=1)
    module = DistillModule(student, build_objective({"kd_cached": KD_CACHED}))
    with pytest.raises(DistillabError, match="kd_cached needs teacher_cache.enabled=true"):
        module._step(_batch(), "train")


def test_a_teacher_term_without_its_teacher_signal_is_an_error_not_a_skip():
    """(It used to be dropped from the loss without a word.)"""
    logits = torch.randn(1, 3, 7)
    inputs = TermInputs(student_logits=logits, targets=torch.zeros(1, 3).long(), mask=torch.ones(1, 3).bool())
    objective = build_objective({"kd": KD, "ce": CE})
    with pytest.raises(DistillabError, match="signal 'teacher_final' is not among this term's inputs"):
        objective(inputs)


def test_a_term_sees_only_the_signals_it_declared():
    inputs = TermInputs(
        student_logits=torch.randn(1, 3, 7), targets=torch.zeros(1, 3).long(), mask=torch.ones(1, 3).bool()
    )
    objective = build_objective({"sneaky": {"_target_": f"{__name__}.ReadsWhatItDidNotDeclare"}})
    with pytest.raises(DistillabError, match="'targets' is not among .*list it in the term's `reads`"):
        objective(inputs)


def test_on_policy_batches_skip_exactly_the_terms_whose_signals_they_lack():
    """The student's own samples carry no data labels (no CE) and no cached teacher (no kd_cached)."""
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(1, 4, 9, generator=g), torch.randn(1, 4, 9, generator=g)
    from distillab.objectives.signals import TeacherFinal, TopK

    signals = {
        "student_logits": s,
        "targets": torch.zeros(1, 4).long(),
        "mask": torch.ones(1, 4).bool(),
        "teacher_final": TeacherFinal(logits=t),
        "teacher_topk": TopK(torch.zeros(1, 4, 1), torch.zeros(1, 4, 1).long(), torch.full((1, 4), -50.0)),
    }
    objective = build_objective({"kd": KD, "ce": CE, "kd_cached": KD_CACHED | {"temperature": 2.0}})
    assert set(objective(TermInputs("train", **signals))[1]) == {"kd", "ce", "kd_cached"}
    assert set(objective(TermInputs("val", **signals))[1]) == {"kd", "ce"}
    assert set(objective(TermInputs("on_policy", **signals))[1]) == {"kd"}
    assert objective.reads("on_policy") == {STUDENT_LOGITS, TEACHER_FINAL, MASK}
    assert TEACHER_TOPK in objective.reads("train")


def test_a_signal_without_a_provider_is_named():
    class NeedsTheMoon(Term):
        reads = frozenset({"moon_phase"})

    student, _ = build_tiny("llama", seed=1)
    module = DistillModule(student, build_objective({"ce": CE}))
    module.objective.terms["moon"] = NeedsTheMoon()
    module.objective.weights["moon"] = 1.0
    with pytest.raises(DistillabError, match="no provider for signal moon_phase"):
        module._step(_batch(), "train")
