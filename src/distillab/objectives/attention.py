"""Attention transfer: match the student's attention distributions to the teacher's on mapped layers.

Per query position, each head's attention row is a distribution over keys; the loss is
KL(teacher_row ‖ student_row), averaged over heads, layers and unmasked query positions. With equal
head counts heads are compared one to one; otherwise both sides are averaged over heads first.
Grouped-query attention needs no special case: attention weights are per *query* head.
Attention weights only exist with the eager kernel, so ``setup`` switches both models to it and
says so in the log (eager attention is slower and uses more memory than SDPA).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

from distillab.objectives.divergences import forward_kl, masked_mean
from distillab.objectives.layer_map import LayerMap, layer_map_for
from distillab.objectives.terms import Term, TermInputs

log = logging.getLogger(__name__)
_EPS = 1e-12


def attention_kl(student_attn: torch.Tensor, teacher_attn: torch.Tensor) -> torch.Tensor:
    """KL(teacher ‖ student) per query, averaged over heads. ``(B, h, T, T) x2 -> (B, T)``.

    Different head counts: both are head-averaged first.
    """
    if student_attn.shape[1] != teacher_attn.shape[1]:
        student_attn, teacher_attn = student_attn.mean(1, keepdim=True), teacher_attn.mean(1, keepdim=True)
    s_logp = student_attn.float().clamp_min(_EPS).log()
    t_logp = teacher_attn.float().clamp_min(_EPS).log()
    return forward_kl(t_logp, s_logp).mean(1)


def ensure_eager_attention(model: nn.Module, who: str) -> None:
    current = getattr(model.config, "_attn_implementation", None)
    if current != "eager":
        model.set_attn_implementation("eager")
        log.warning(
            "attention transfer: switched the %s from %s to eager attention (weights are needed)",
            who,
            current,
        )


class AttentionTransfer(Term):
    needs_teacher = True
    needs_attentions = True

    def __init__(
        self, layer_map: str = "uniform", pairs: Sequence[Sequence[int]] | None = None, k: int | None = None
    ):
        super().__init__()
        self.map_kind, self.map_pairs, self.map_k = layer_map, pairs, k
        self.layer_map: LayerMap = []

    def setup(self, student: nn.Module, teacher: nn.Module | None) -> None:
        self.layer_map = layer_map_for(self.map_kind, student, teacher, self.map_pairs, self.map_k)
        ensure_eager_attention(student, "student")
        ensure_eager_attention(teacher, "teacher")

    def describe(self) -> str:
        return f"attention KL on layer pairs (student, teacher) {self.layer_map}"

    def forward(self, inputs: TermInputs) -> torch.Tensor:
        mask = inputs.mask
        losses = []
        for s, t in self.layer_map:
            per_query = attention_kl(inputs.student_attentions[s], inputs.teacher_attentions[t])
            losses.append(masked_mean(per_query, mask))
        return torch.stack(losses).mean()
