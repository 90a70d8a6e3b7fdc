"""How the training step computes each signal a term can read (names in objectives/signals.py).

One provider per signal, registered with ``@provides(NAME)``. The step asks for exactly the union of
what the objective's terms declare (``compute_signals``); each provider runs at most once per batch,
and the forwards several signals share (the student's, the teacher's) run once through ``Step.once``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from distillab.errors import DistillabError
from distillab.objectives.attention import take_captured_qk
from distillab.objectives.cross_tokenizer import CrossTokenizerInputs, teacher_head
from distillab.objectives.signals import (
    CROSS_TEACHER,
    MASK,
    STUDENT_HIDDEN,
    STUDENT_LOGITS,
    STUDENT_QK,
    TARGETS,
    TEACHER_FINAL,
    TEACHER_HIDDEN,
    TEACHER_LOGITS,
    TEACHER_QK,
    TEACHER_TOPK,
    TeacherFinal,
    TermInputs,
    TopK,
)
from distillab.precision import current as current_precision
from distillab.precision import module_device_type
from distillab.training.sharding import is_sharded

if TYPE_CHECKING:
    from distillab.training.distill_module import DistillModule

PROVIDERS: dict[str, Callable[[Step], Any]] = {}


def provides(name: str) -> Callable:
    """Register the decorated ``fn(step) -> value`` as the provider of signal ``name``."""

    def register(fn: Callable[[Step], Any]) -> Callable[[Step], Any]:
        PROVIDERS[name] = fn
        return fn

    return register


@dataclass
class Step:
    """One batch's step: the module (models, aligner), the batch, its kind, the signals asked for."""

    module: DistillModule
    batch: dict[str, torch.Tensor]
    kind: str
    wanted: frozenset[str]
    _memo: dict[str, Any] = field(default_factory=dict)

    def once(self, key: str, compute: Callable[[], Any]) -> Any:
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def get(self, name: str) -> Any:
        return self.once(name, lambda: PROVIDERS[name](self))

    @property
    def teacher(self):
        if self.module.teacher is None:
            raise DistillabError(
                f"a term reads the teacher ({', '.join(sorted(self.wanted))}), but the run has none"
            )
        return self.module.teacher


def compute_signals(module: DistillModule, batch: dict, kind: str, wanted: frozenset[str]) -> TermInputs:
    """Exactly the ``wanted`` signals of ``batch``."""
    unknown = sorted(wanted - PROVIDERS.keys())
    if unknown:
        raise DistillabError(
            f"no provider for signal {', '.join(unknown)}; known: {', '.join(sorted(PROVIDERS))}"
        )
    step = Step(module, batch, kind, frozenset(wanted))
    return TermInputs(kind, **{name: step.get(name) for name in sorted(wanted)})


@provides(TARGETS)
def targets(step: Step) -> torch.Tensor:
    # Position t predicts token t+1. Targets are shifted left and the last position gets -100, so
    # logits keep their full, contiguous (B, T, V) shape: no copies of vocabulary-sized tensors.
    labels = step.batch["labels"]
    return torch.cat([labels[:, 1:], labels.new_full((labels.shape[0], 1), -100)], dim=1)


@provides(MASK)
def mask(step: Step) -> torch.Tensor:
    attention = step.batch["attention_mask"].bool()
    real = (step.get(TARGETS) != -100) & attention
    real[:, :-1] &= attention[:, 1:]
    return real


def _student_out(step: Step):
    return step.once(
        "student forward",
        lambda: step.module.student(
            input_ids=step.batch["input_ids"],
            attention_mask=step.batch["attention_mask"],
            output_hidden_states=STUDENT_HIDDEN in step.wanted,
        ),
    )


@provides(STUDENT_LOGITS)
def student_logits(step: Step) -> torch.Tensor:
    return _student_out(step).logits


@provides(STUDENT_HIDDEN)
def student_hidden(step: Step) -> tuple[torch.Tensor, ...]:
    return _student_out(step).hidden_states


@provides(STUDENT_QK)
def student_qk(step: Step) -> dict[int, dict]:
    _student_out(step)  # the forward fills the capturing kernel's slots (objectives/attention.py)
    return take_captured_qk(step.module.student)


def _teacher_out(step: Step):
    """The frozen teacher's forward, in the run's precision even when the student trains in float32
    (precision=auto with trainer.precision=32-true): its bf16 forward moved one KD step's gradient by
    a cosine of 1e-5 (bench/bf16_numerics.py), the student's own by far more.

    Unless a term reads its whole logits, the teacher stops at its final hidden states and kd forms
    logits a chunk of positions at a time (a 262k vocabulary never exists whole). FSDP: the sharded
    root module's forward gathers the weights, so the whole model runs."""

    def forward():
        teacher = step.teacher
        whole = (
            TEACHER_LOGITS in step.wanted
            or is_sharded(teacher)
            or not step.module.head_reproduces_logits(step.batch["input_ids"])
        )
        with torch.no_grad(), current_precision().autocast(module_device_type(teacher)):
            return (teacher if whole else teacher.base_model)(
                input_ids=step.batch["input_ids"],
                attention_mask=step.batch["attention_mask"],
                output_hidden_states=TEACHER_HIDDEN in step.wanted,
            )

    return step.once("teacher forward", forward)


@provides(TEACHER_LOGITS)
def teacher_logits(step: Step) -> torch.Tensor:
    return _teacher_out(step).logits


@provides(TEACHER_FINAL)
def teacher_final(step: Step) -> TeacherFinal:
    out = _teacher_out(step)
    logits = getattr(out, "logits", None)
    if logits is not None:
        return TeacherFinal(logits=logits)
    return TeacherFinal(hidden=out.last_hidden_state, head=teacher_head(step.teacher))


@provides(TEACHER_HIDDEN)
def teacher_hidden(step: Step) -> tuple[torch.Tensor, ...]:
    return _teacher_out(step).hidden_states


@provides(TEACHER_QK)
def teacher_qk(step: Step) -> dict[int, dict]:
    _teacher_out(step)
    return take_captured_qk(step.teacher)


@provides(TEACHER_TOPK)
def teacher_topk(step: Step) -> TopK:
    if "teacher_topk_logp" not in step.batch:
        raise DistillabError(
            "objective: kd_cached needs teacher_cache.enabled=true (the batch has no cached teacher)"
        )
    batch = step.batch
    return TopK(batch["teacher_topk_logp"], batch["teacher_topk_ids"], batch["teacher_tail_logp"])


@provides(CROSS_TEACHER)
def cross_teacher(step: Step) -> CrossTokenizerInputs:
    """The teacher reads the batch re-encoded with its own tokenizer (distill.check_cross_tokenizer_teacher)."""
    teacher, aligner = step.teacher, step.module.aligner
    if aligner is None:
        raise DistillabError("a cross-tokenizer term needs the run's token aligner (distill.pair_tokenizers)")
    aligned = aligner(step.batch["input_ids"], step.batch["attention_mask"])
    with torch.no_grad(), current_precision().autocast(module_device_type(teacher)):
        hidden = teacher.base_model(
            input_ids=aligned.teacher_ids, attention_mask=aligned.teacher_mask
        ).last_hidden_state
    return CrossTokenizerInputs(aligned.pairs, hidden, teacher_head(teacher))
