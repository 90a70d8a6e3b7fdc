"""Intermediate hidden-state alignment between mapped student and teacher layers.

``HiddenStateAlignment`` compares the output of each mapped layer pair with per-token MSE or cosine
distance. When widths differ, a learned linear projection maps the student's hidden size to the
teacher's; it trains with the student (it lives in the objective, so it is checkpointed) and is
dropped at export, since only the student is exported.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from distillab.errors import DistillabError
from distillab.objectives.divergences import masked_mean
from distillab.objectives.layer_map import LayerMap, layer_map_for
from distillab.objectives.signals import MASK, STUDENT_HIDDEN, TEACHER_HIDDEN, TermInputs
from distillab.objectives.terms import Term

log = logging.getLogger(__name__)


def hidden_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the hidden dimension. ``(B, T, H), (B, T, H) -> (B, T)``."""
    return (student.float() - teacher.float()).pow(2).mean(-1)


def hidden_cosine_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """1 − cosine similarity per token. ``(B, T, H), (B, T, H) -> (B, T)``."""
    return 1.0 - F.cosine_similarity(student.float(), teacher.float(), dim=-1, eps=1e-8)


HIDDEN_LOSSES = {"mse": hidden_mse, "cosine": hidden_cosine_distance}


class HiddenStateAlignment(Term):
    """Mean over mapped pairs of the masked per-token distance between (projected) hidden states."""

    reads = frozenset({STUDENT_HIDDEN, TEACHER_HIDDEN, MASK})

    def __init__(
        self,
        loss: str = "mse",
        layer_map: str = "uniform",
        pairs: Sequence[Sequence[int]] | None = None,
        k: int | None = None,
    ):
        super().__init__()
        if loss not in HIDDEN_LOSSES:
            raise DistillabError(
                f"objective: unknown hidden loss {loss!r}; valid: {', '.join(HIDDEN_LOSSES)}"
            )
        self.loss_name, self.distance = loss, HIDDEN_LOSSES[loss]
        self.map_kind, self.map_pairs, self.map_k = layer_map, pairs, k
        self.layer_map: LayerMap = []
        self.projections = nn.ModuleList()

    def setup(self, student: nn.Module, teacher: nn.Module | None) -> None:
        self.layer_map = layer_map_for(self.map_kind, student, teacher, self.map_pairs, self.map_k)
        s_width, t_width = student.config.hidden_size, teacher.config.hidden_size
        make = (lambda: nn.Linear(s_width, t_width, bias=False)) if s_width != t_width else nn.Identity
        self.projections = nn.ModuleList(make() for _ in self.layer_map).to(next(student.parameters()).device)

    def describe(self) -> str:
        projected = (
            "learned projection"
            if any(isinstance(p, nn.Linear) for p in self.projections)
            else "no projection"
        )
        return f"{self.loss_name} on layer pairs (student, teacher) {self.layer_map}, {projected}"

    def forward(self, inputs: TermInputs) -> torch.Tensor:
        losses = []
        for (s, t), project in zip(self.layer_map, self.projections, strict=True):
            h_s = project(inputs.student_hidden[s + 1])
            h_t = inputs.teacher_hidden[t + 1]
            losses.append(masked_mean(self.distance(h_s, h_t), inputs.mask))
        return torch.stack(losses).mean()
