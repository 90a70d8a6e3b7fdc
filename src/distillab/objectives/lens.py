"""DistillLens (arXiv 2602.13567): align teacher and student through the logit lens.

For K mapped interior layer pairs, each model's hidden state is projected through its *own* final
norm (switchable: the paper's released code omits it) and LM head to a vocabulary distribution, and
the two are compared with a symmetric divergence (JSD, β = 0.5, by default), averaged over tokens
and layers. Add it to a final-layer term (the ``distill_lens`` preset pairs it with ``kd``).

Memory: K × tokens × vocab logits would dwarf everything else (K=4, 2k tokens, 49k vocab: 1.6 GB
per model in fp32). Tokens are processed in chunks under activation checkpointing, so only one
chunk's logits exist at a time, forward and backward. The released code's ``mask.repeat(K, 1)``
against batch-major tensors misaligns rows when batch > 1; here each pair uses the (B, T) mask
directly against (B, T) values, so rows cannot drift.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from distillab.errors import DistillabError
from distillab.objectives.chunking import chunked_masked_mean
from distillab.objectives.divergences import get_divergence
from distillab.objectives.layer_map import LayerMap, evenly_spaced_interior, layer_map_for
from distillab.objectives.terms import Term, TermInputs


def lens_head(model: nn.Module, apply_norm: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """hidden ``(N, H)`` -> vocabulary logits ``(N, V)`` through the model's final norm and LM head."""
    norm, head = model.model.norm, model.get_output_embeddings()
    return (lambda h: head(norm(h))) if apply_norm else head


def chunked_lens_divergence(
    student_h: torch.Tensor,
    teacher_h: torch.Tensor,
    mask: torch.Tensor,
    student_head: Callable[[torch.Tensor], torch.Tensor],
    teacher_head: Callable[[torch.Tensor], torch.Tensor],
    divergence: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    temperature: float = 1.0,
    chunk_tokens: int = 256,
) -> torch.Tensor:
    """Masked mean over tokens of D(lens_teacher, lens_student). ``(B, T, H_s), (B, T, H_t), (B, T) -> ()``.

    Only unmasked tokens are projected; each chunk is recomputed in backward instead of stored.
    """

    def rows(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        s_logp = F.log_softmax(student_head(s).float() / temperature, -1)
        with torch.no_grad():
            t_logp = F.log_softmax(teacher_head(t).float() / temperature, -1)
        return divergence(t_logp, s_logp)

    return chunked_masked_mean(rows, student_h, teacher_h, mask, chunk_tokens)


class DistillLensTerm(Term):
    needs_teacher = True
    needs_hidden_states = True

    def __init__(
        self,
        num_pairs: int = 4,
        layer_map: str = "uniform",
        pairs: Sequence[Sequence[int]] | None = None,
        divergence: str = "jsd",
        beta: float = 0.5,
        apply_norm: bool = True,
        temperature: float = 1.0,
        chunk_tokens: int = 256,
    ):
        super().__init__()
        if temperature <= 0:
            raise DistillabError(f"objective: temperature must be > 0, got {temperature}")
        kwargs = {"beta": beta} if divergence == "jsd" else {}
        self.divergence = get_divergence(divergence, **kwargs)
        self.divergence_name, self.num_pairs, self.apply_norm = divergence, int(num_pairs), bool(apply_norm)
        self.map_kind, self.map_pairs = layer_map, pairs
        self.temperature, self.chunk_tokens = float(temperature), int(chunk_tokens)
        self.layer_map: LayerMap = []
        self._heads: list[Callable] = []  # plain list: the models' heads must not become our parameters

    def setup(self, student: nn.Module, teacher: nn.Module | None) -> None:
        full = layer_map_for(self.map_kind, student, teacher, self.map_pairs)
        self.layer_map = full if self.map_kind == "explicit" else evenly_spaced_interior(full, self.num_pairs)
        self._heads = [lens_head(student, self.apply_norm), lens_head(teacher, self.apply_norm)]

    def describe(self) -> str:
        norm = "with" if self.apply_norm else "without"
        return f"{self.divergence_name} through the logit lens ({norm} final norm) on pairs {self.layer_map}"

    def forward(self, inputs: TermInputs) -> torch.Tensor:
        student_head, teacher_head = self._heads
        losses = [
            chunked_lens_divergence(
                inputs.student_hidden[s + 1],
                inputs.teacher_hidden[t + 1],
                inputs.mask,
                student_head,
                teacher_head,
                self.divergence,
                self.temperature,
                self.chunk_tokens,
            )
            for s, t in self.layer_map
        ]
        return torch.stack(losses).mean()
