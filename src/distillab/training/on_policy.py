"""On-policy distillation (GKD, Agarwal et al., arXiv 2306.13649; TRL's GKD/Distillation trainers).

With probability ``fraction`` (GKD's λ) a training batch is replaced by the student's own
continuations of prompts cut from it: the first ``prompt_tokens`` tokens of each row, continued by
sampling ``new_tokens`` tokens from the student (batched, with its KV cache, no gradients). The
teacher then scores the student's text under the objective's divergence, so the student learns
where its own samples go wrong instead of only on data it would not have written (exposure bias).

Only the sampled tokens are trained on (the prompt is masked), and only the teacher terms run on
such a batch: cross-entropy on the student's own samples would reinforce them. Across tokenizers
the teacher reads its own encoding of the sampled text (``data/token_alignment.py``).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import torch
from transformers import GenerationConfig

from distillab.errors import DistillabError


@dataclass
class OnPolicy:
    fraction: float = 0.0  # λ: probability that a training batch is sampled by the student
    prompt_tokens: int = 64  # prompt: the first tokens of each data row
    new_tokens: int = 64  # sampled continuation length (fewer where a row ends with EOS)
    temperature: float = 1.0  # sampling temperature of the student
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.fraction) <= 1.0:
            raise DistillabError(f"on_policy.fraction: must be in [0, 1] (GKD's lambda), got {self.fraction}")
        for key in ("prompt_tokens", "new_tokens"):
            if int(getattr(self, key)) < 1:
                raise DistillabError(f"on_policy.{key}: must be >= 1, got {getattr(self, key)}")
        if float(self.temperature) <= 0:
            raise DistillabError(f"on_policy.temperature: must be > 0, got {self.temperature}")

    @property
    def enabled(self) -> bool:
        return self.fraction > 0

    def chosen(self, step: int) -> bool:
        """Whether training step ``step`` is on-policy: a function of (seed, step) only, so a resumed
        run makes the same choices."""
        return self.enabled and random.Random(self.seed * 1_000_003 + step).random() < self.fraction

    @torch.no_grad()
    def sample(self, student, batch: dict[str, torch.Tensor], pad_id: int, eos_id: int | None):
        """``(batch of prompt + sampled continuation, stats)``; labels are -100 on the prompt and
        after a row's EOS. The student is put back in training mode afterwards."""
        prompts = batch["input_ids"][:, : self.prompt_tokens]
        prompt_mask = batch["attention_mask"][:, : self.prompt_tokens]
        was_training, own_config = student.training, student.generation_config
        student.eval()
        # generate() fills every field the passed config leaves unset from the model's own
        # generation_config (top-k, repetition penalty, suppressed tokens, ...): swap in a blank one
        # for the call, so nothing reshapes the student's distribution; on-policy means its own policy
        student.generation_config = GenerationConfig()
        start = time.perf_counter()
        try:
            ids = student.generate(
                input_ids=prompts,
                attention_mask=prompt_mask,
                generation_config=GenerationConfig(
                    do_sample=True,
                    temperature=float(self.temperature),
                    top_k=0,
                    top_p=1.0,
                    max_new_tokens=int(self.new_tokens),
                    pad_token_id=pad_id,
                    eos_token_id=eos_id,
                    use_cache=True,
                ),
            )
        finally:
            student.train(was_training)
            student.generation_config = own_config
        seconds = time.perf_counter() - start
        new = ids[:, prompts.shape[1] :]
        # keep a row's tokens up to and including its first EOS; generate pads the rest
        after_eos = torch.zeros_like(new, dtype=torch.bool)
        if eos_id is not None:
            after_eos[:, 1:] = (new[:, :-1] == eos_id).long().cumsum(-1).bool()
        attention = torch.cat([prompt_mask, (~after_eos).long()], dim=1)
        labels = ids.masked_fill(attention == 0, -100)
        labels[:, : prompts.shape[1]] = -100
        sampled = int((~after_eos).sum())
        stats = {"generation_seconds": seconds, "generated_tokens": float(sampled)}
        return {"input_ids": ids, "attention_mask": attention, "labels": labels}, stats
