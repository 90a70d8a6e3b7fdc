"""DistillLens (arXiv 2602.13567): align teacher and student through the logit lens.

For K mapped interior layer pairs, each model's hidden state is projected through its *own* final
norm (switchable: the paper's released code omits it) and LM head to a vocabulary distribution, and
the two are compared with a symmetric divergence (JSD, β = 0.5, by default), averaged over tokens
and layers. Add it to a final-layer term (the ``distill_lens`` preset pairs it with ``kd``).

Cost: K × tokens × vocab logits per model would dwarf everything else (K = 4, 2k tokens, 49k vocab:
1.6 GB per model in float32, and five ``H x V`` products per row). The lens loss is a scalar, so its
gradients are finished chunk by chunk inside the forward pass (:mod:`head_divergence`): one chunk's
logits exist at a time, nothing is recomputed, and all K pairs share one buffer for the head's
gradient. ``token_fraction`` < 1 scores a fresh uniform sample of the unmasked tokens each training
step (the same tokens for every pair) — an unbiased estimate of the all-token loss at a fraction
of the cost; validation always scores every token.

The released code's ``mask.repeat(K, 1)`` against batch-major tensors misaligns rows when
batch > 1; here each pair's rows are selected with the (B, T) mask itself, so rows cannot drift.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from distillab.errors import DistillabError
from distillab.objectives.divergences import get_divergence
from distillab.objectives.head_divergence import (
    ValueAndGrad,
    autograd_value_and_grad,
    head_divergence_sum,
    jsd_value_and_grad,
)
from distillab.objectives.layer_map import LayerMap, evenly_spaced_interior, layer_map_for
from distillab.objectives.signals import MASK, STUDENT_HIDDEN, TEACHER_HIDDEN, TermInputs
from distillab.objectives.terms import Term


def lens_head(model: nn.Module, apply_norm: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """hidden ``(N, H)`` -> vocabulary logits ``(N, V)`` through the model's final norm and LM head."""
    norm, head = model.model.norm, model.get_output_embeddings()
    return (lambda h: head(norm(h))) if apply_norm else head


def lens_value_and_grad(divergence: str, beta: float = 0.5) -> ValueAndGrad:
    """JSD has an analytic gradient (a few vocabulary passes); other divergences use autograd per chunk."""
    if divergence == "jsd":
        if not 0.0 <= beta <= 1.0:
            raise DistillabError(f"objective: jsd beta must be in [0, 1], got {beta}")
        return jsd_value_and_grad(beta)
    return autograd_value_and_grad(get_divergence(divergence))


def lens_divergence(
    student_hidden: Sequence[torch.Tensor],
    teacher_hidden: Sequence[torch.Tensor],
    mask: torch.Tensor,
    student: nn.Module,
    teacher: nn.Module,
    value_and_grad: ValueAndGrad,
    apply_norm: bool = True,
    temperature: float = 1.0,
    chunk_tokens: int = 256,
    rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over pairs and unmasked tokens of D(lens_teacher, lens_student).

    ``student_hidden[k]``/``teacher_hidden[k]``: pair k's ``(B, T, H)`` hidden states; ``mask``
    ``(B, T)``; ``rows``: optional indices into the unmasked tokens (flattened) to score instead
    of all of them.
    """
    keep = mask.reshape(-1).bool()

    def select(h: torch.Tensor) -> torch.Tensor:
        h = h.reshape(-1, h.shape[-1])[keep]
        return h if rows is None else h[rows]

    s_rows = torch.cat([select(h) for h in student_hidden])
    if s_rows.shape[0] == 0:
        return s_rows.new_zeros((), dtype=torch.float32)
    with torch.no_grad():
        t_rows = torch.cat([select(h) for h in teacher_hidden])
        if apply_norm:
            t_rows = teacher.model.norm(t_rows)
    if apply_norm:
        s_rows = student.model.norm(s_rows)
    total = head_divergence_sum(
        s_rows,
        student.get_output_embeddings(),
        t_rows,
        teacher.get_output_embeddings(),
        value_and_grad,
        temperature,
        chunk_tokens,
    )
    return total / s_rows.shape[0]


class DistillLensTerm(Term):
    reads = frozenset({STUDENT_HIDDEN, TEACHER_HIDDEN, MASK})

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
        token_fraction: float = 1.0,
    ):
        super().__init__()
        if temperature <= 0:
            raise DistillabError(f"objective: temperature must be > 0, got {temperature}")
        if not 0.0 < token_fraction <= 1.0:
            raise DistillabError(f"objective: lens token_fraction must be in (0, 1], got {token_fraction}")
        self.value_and_grad = lens_value_and_grad(divergence, beta)
        self.token_fraction = float(token_fraction)
        self.divergence_name, self.num_pairs, self.apply_norm = divergence, int(num_pairs), bool(apply_norm)
        self.map_kind, self.map_pairs = layer_map, pairs
        self.temperature, self.chunk_tokens = float(temperature), int(chunk_tokens)
        self.layer_map: LayerMap = []
        self._models: list[nn.Module] = []  # plain list: the models must not become our submodules

    def setup(self, student: nn.Module, teacher: nn.Module | None) -> None:
        # last_k: the last num_pairs layers before the final one (the final pair is the logits' own KD);
        # without k it built one pair, whose interior is empty: last_k failed every time
        full = layer_map_for(self.map_kind, student, teacher, self.map_pairs, k=self.num_pairs + 1)
        self.layer_map = full if self.map_kind == "explicit" else evenly_spaced_interior(full, self.num_pairs)
        self._models = [student, teacher]

    def describe(self) -> str:
        norm = "with" if self.apply_norm else "without"
        sample = (
            "" if self.token_fraction == 1.0 else f", {self.token_fraction:g} of the tokens per training step"
        )
        return f"{self.divergence_name} through the logit lens ({norm} final norm) on pairs {self.layer_map}{sample}"

    def forward(self, inputs: TermInputs) -> torch.Tensor:
        student, teacher = self._models
        rows = None
        if self.token_fraction < 1.0 and torch.is_grad_enabled():
            n = int(inputs.mask.sum())
            rows = torch.randperm(n)[: max(1, round(self.token_fraction * n))].sort().values
        return lens_divergence(
            [inputs.student_hidden[s + 1] for s, _ in self.layer_map],
            [inputs.teacher_hidden[t + 1] for _, t in self.layer_map],
            inputs.mask,
            student,
            teacher,
            self.value_and_grad,
            self.apply_norm,
            self.temperature,
            self.chunk_tokens,
            rows,
        )
