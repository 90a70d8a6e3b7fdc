"""Contrastive distillation in the style of DistiLLM-2 (arXiv 2503.07067).

Two halves, each a skew divergence on a different kind of sequence:

- on the batch's sequences (teacher-written responses, e.g. a ``teacher_generated`` corpus), a skew
  *forward* KL pulls the student up where the teacher's likelihood is high;
- on the student's *own* sampled responses to prompts, a skew *reverse* KL pushes the student down
  where the teacher's likelihood is low.

Student samples are regenerated every ``regenerate_every`` training steps (and cached in between),
for ``num_prompts`` prompts drawn from a prompt source, so sampling costs a fraction of training.
``teacher_responses: generate`` also samples the teacher on the same prompts at the same moments
and pulls up on those instead of on the batch (validation always uses the batch: no sampling).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from distillab.errors import DistillabError
from distillab.objectives.chunking import chunked_masked_mean
from distillab.objectives.divergences import skew_forward_kl, skew_reverse_kl
from distillab.objectives.signals import MASK, STUDENT_LOGITS, TEACHER_LOGITS, TermInputs
from distillab.objectives.terms import Term
from distillab.precision import current as current_precision
from distillab.precision import module_device_type

log = logging.getLogger(__name__)


class ContrastiveDistillation(Term):
    reads = frozenset({STUDENT_LOGITS, TEACHER_LOGITS, MASK})

    def __init__(
        self,
        alpha: float = 0.1,
        temperature: float = 1.0,
        regenerate_every: int = 20,
        num_prompts: int = 4,
        max_new_tokens: int = 64,
        prompts: Mapping[str, Any] | None = None,
        sample_temperature: float = 1.0,
        seed: int = 0,
        chunk_tokens: int = 256,
        teacher_responses: str = "batch",
    ):
        super().__init__()
        if teacher_responses not in ("batch", "generate"):
            raise DistillabError(
                f"objective: contrastive teacher_responses must be batch or generate, got {teacher_responses!r}"
            )
        self.teacher_responses = teacher_responses
        if not 0.0 <= alpha < 1.0:
            raise DistillabError(f"objective: contrastive alpha must be in [0, 1), got {alpha}")
        if temperature <= 0 or sample_temperature <= 0:
            raise DistillabError(
                f"objective: temperature must be > 0, got {min(temperature, sample_temperature)}"
            )
        if regenerate_every < 1:
            raise DistillabError(f"objective: regenerate_every must be >= 1, got {regenerate_every}")
        self.alpha, self.temperature, self.sample_temperature = (
            float(alpha),
            float(temperature),
            float(sample_temperature),
        )
        self.regenerate_every, self.num_prompts, self.max_new_tokens = (
            int(regenerate_every),
            int(num_prompts),
            int(max_new_tokens),
        )
        self.chunk_tokens = int(chunk_tokens)  # vocabulary-sized temporaries this many tokens at a time
        self.prompt_source, self.rng = dict(prompts or {}), random.Random(seed)
        self.prompts: list[str] = []
        self._models: list[nn.Module] = []  # student, teacher: plain list, not our parameters
        self._tokenizer = None
        self._calls, self._samples = 0, None

    def setup(self, student: nn.Module, teacher: nn.Module | None) -> None:
        self._models = [student, teacher]

    def documents_wanted(self) -> dict:
        if not self.prompt_source:
            raise DistillabError("prompts: give a prompt source (format, files, template)")
        return self.prompt_source

    def attach_documents(self, tokenizer, prompts: list[str]) -> None:
        """Give the term its tokenizer and prompt pool (done by the run, which knows the data)."""
        if not prompts:
            raise DistillabError(
                "objective.terms.contrastive.prompts: no prompts to sample student responses for"
            )
        self._tokenizer, self.prompts = tokenizer, list(prompts)

    def describe(self) -> str:
        where = "the batch" if self.teacher_responses == "batch" else "teacher samples"
        return (
            f"skew forward KL (alpha {self.alpha}) on {where} + skew reverse KL on student samples of "
            f"{self.num_prompts} prompts, regenerated every {self.regenerate_every} steps"
        )

    def _sample(self) -> dict[str, dict[str, torch.Tensor]]:
        """Fresh responses to freshly drawn prompts: the student's, and the teacher's if generated."""
        chosen = self.rng.sample(self.prompts, min(self.num_prompts, len(self.prompts)))
        samples = {"student": self._generate(self._models[0], chosen)}
        if self.teacher_responses == "generate":  # the frozen teacher in the run's precision
            teacher = self._models[1]
            with current_precision().autocast(module_device_type(teacher)):
                samples["teacher"] = self._generate(teacher, chosen)
        return samples

    @torch.no_grad()
    def _generate(self, model: nn.Module, chosen: list[str]) -> dict[str, torch.Tensor]:
        tok = self._tokenizer
        side, tok.padding_side = tok.padding_side, "left"
        try:
            enc = tok(chosen, return_tensors="pt", padding=True).to(next(model.parameters()).device)
            was_training = model.training
            model.eval()
            out = model.generate(
                **enc,
                do_sample=True,
                temperature=self.sample_temperature,
                max_new_tokens=self.max_new_tokens,
                pad_token_id=tok.pad_token_id,
            )
            model.train(was_training)
        finally:
            tok.padding_side = side
        prompt_len = enc["input_ids"].shape[1]
        attention = torch.cat(
            [enc["attention_mask"], (out[:, prompt_len:] != tok.pad_token_id).long()], dim=1
        )
        response = torch.zeros_like(attention, dtype=torch.bool)
        response[:, prompt_len - 1 : -1] = attention[
            :, prompt_len:
        ].bool()  # positions predicting response tokens
        return {"input_ids": out, "attention_mask": attention, "response_mask": response}

    def forward(self, inputs: TermInputs) -> torch.Tensor:
        if self._tokenizer is None:
            raise DistillabError("objective.terms.contrastive: no prompts attached (the run attaches them)")
        if not self.training or self.teacher_responses == "batch":  # validation: no sampling
            pull_up = chunked_masked_mean(
                self._skew(skew_forward_kl),
                inputs.student_logits,
                inputs.teacher_logits,
                inputs.mask,
                self.chunk_tokens,
            )
        if not self.training:
            return pull_up
        if self._samples is None or self._calls % self.regenerate_every == 0:
            self._samples = self._sample()
        self._calls += 1
        if self.teacher_responses == "generate":
            pull_up = self._on_samples(self._samples["teacher"], skew_forward_kl)
        return pull_up + self._on_samples(self._samples["student"], skew_reverse_kl)

    def _push_down(self, samples: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._on_samples(samples, skew_reverse_kl)

    def _on_samples(self, samples: dict[str, torch.Tensor], divergence) -> torch.Tensor:
        """A skew divergence on sampled responses, averaged over response tokens.

        One sample at a time under activation checkpointing: the samples' student activations are
        recomputed in backward one sample at a time instead of all being held next to the batch's
        (a second batch's worth of activations otherwise: +1.5 GB peak on SmolLM2, bench/).
        """
        student, teacher = self._models
        rows = self._skew(divergence)

        def sample_sum(ids, attention, response, t_logits):
            s_logits = student(input_ids=ids, attention_mask=attention).logits
            return chunked_masked_mean(rows, s_logits, t_logits, response, self.chunk_tokens) * response.sum()

        total, count = None, samples["response_mask"].sum().clamp_min(1)
        for i in range(samples["input_ids"].shape[0]):
            ids, attention = samples["input_ids"][i : i + 1], samples["attention_mask"][i : i + 1]
            response = samples["response_mask"][i : i + 1]
            with torch.no_grad(), current_precision().autocast(module_device_type(teacher)):
                t_logits = teacher(input_ids=ids, attention_mask=attention).logits
            part = checkpoint(sample_sum, ids, attention, response, t_logits, use_reentrant=False)
            total = part if total is None else total + part
        return total / count

    def _skew(self, divergence):
        """Per-token skew divergence of student/teacher logit rows, at this term's temperature and alpha."""

        def rows(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
            teacher_logp = F.log_softmax(teacher_logits.float() / self.temperature, -1)
            student_logp = F.log_softmax(student_logits.float() / self.temperature, -1)
            return divergence(teacher_logp, student_logp, self.alpha)

        return rows
