"""Objective terms: each turns one forward pass of student (and teacher) into a scalar loss.

A term is an ``nn.Module`` (so a later term can own learned parameters, e.g. a projection) whose
``forward`` takes :class:`TermInputs`. Add a term by writing a class here (or in a sibling module)
and naming it by ``_target_`` under ``terms:`` in an ``objective/`` config.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from distillab.errors import DistillabError
from distillab.objectives.chunked_kd import chunked_soft_label_kd
from distillab.objectives.divergences import (
    forward_kl,
    forward_kl_from_logits,
    forward_kl_topk,
    get_divergence,
    masked_mean,
)
from distillab.precision import float32_math

if TYPE_CHECKING:
    from distillab.objectives.cross_tokenizer import CrossTokenizerInputs


@dataclass
class TermInputs:
    """What a term may look at, for one batch.

    Shapes: ``student_logits``/``teacher_logits`` ``(B, T, V)`` (position t predicts token t+1);
    ``targets`` ``(B, T)``, the next token (-100 where there is none); ``mask`` ``(B, T)``, true
    where the next token is real (not padding, not ignored, not past the end).
    """

    student_logits: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    teacher_logits: torch.Tensor | None = None
    # Per layer, (B, T, H) each, index 0 = embeddings, i + 1 = output of decoder layer i. Only filled
    # when a term asks (needs_hidden_states), since they cost memory.
    student_hidden: tuple[torch.Tensor, ...] | None = None
    teacher_hidden: tuple[torch.Tensor, ...] | None = None
    # needs_attentions: post-RoPE queries/keys of the captured layers, {layer: {query, key, mask,
    # scaling}}, from objectives/attention.py's capturing kernel (not whole attention matrices).
    student_qk: dict[int, dict] | None = None
    teacher_qk: dict[int, dict] | None = None
    # From the offline teacher cache (data/teacher_cache.py): (B, T, k), (B, T, k), (B, T).
    teacher_topk_logp: torch.Tensor | None = None
    teacher_topk_ids: torch.Tensor | None = None
    teacher_tail_logp: torch.Tensor | None = None
    # The teacher's final hidden states and LM head, given instead of teacher_logits when no term
    # needs the full logits (kd then forms them a chunk of positions at a time: objectives/chunked_kd.py).
    teacher_final_hidden: torch.Tensor | None = None
    teacher_head: Callable[[torch.Tensor], torch.Tensor] | None = None
    # A teacher with another tokenizer (cross_tokenizer terms): aligned pairs, its hidden states, head.
    cross: CrossTokenizerInputs | None = None
    # The batch is the student's own samples (training/on_policy.py): only teacher terms apply.
    on_policy: bool = False


class Term(nn.Module):
    """Base class. The ``needs_*`` flags tell the training loop what to compute for this term."""

    needs_teacher: bool = False
    needs_cache: bool = False  # trains from the offline teacher top-k cache
    needs_hidden_states: bool = False
    needs_attentions: bool = False
    cross_tokenizer: bool = False  # reads TermInputs.cross: works when the teacher's tokenizer differs
    needs_teacher_logits: bool = False  # reads the teacher's full (B, T, V) logits

    def setup(self, student: nn.Module, teacher: nn.Module | None) -> None:
        """Called once the models exist: build layer maps, projections, switch attention kernels."""

    def teardown(self, student: nn.Module, teacher: nn.Module | None) -> None:
        """Called when training ends: undo what ``setup`` did to the models."""

    def describe(self) -> str:
        """One line for the start-of-run log (layer maps and the like)."""
        return ""

    def forward(self, inputs: TermInputs) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class HardLabelCE(Term):
    """Cross-entropy on the data's next tokens, averaged over unmasked tokens."""

    def forward(self, inputs: TermInputs) -> torch.Tensor:
        return hard_label_ce(inputs.student_logits, inputs.targets, inputs.mask)


class SoftLabelKD(Term):
    """``T² · D(teacher_T, student_T)`` with D a divergence from :mod:`divergences` (Hinton et al.).

    The T² factor keeps gradient magnitudes comparable across temperatures, so the weight against
    the hard-label term means the same thing at any T.
    """

    needs_teacher = True

    def __init__(
        self,
        temperature: float = 1.0,
        divergence: str = "forward_kl",
        chunk_tokens: int = 256,
        **divergence_kwargs: float,
    ):
        super().__init__()
        if temperature is None or float(temperature) <= 0:
            raise DistillabError(f"objective: temperature must be > 0, got {temperature}")
        if int(chunk_tokens) < 1:
            raise DistillabError(f"objective: chunk_tokens must be >= 1, got {chunk_tokens}")
        self.temperature = float(temperature)
        self.chunk_tokens = int(chunk_tokens)  # positions whose teacher logits exist at once
        self.divergence_name = divergence
        self.divergence = get_divergence(divergence, **divergence_kwargs)

    def forward(self, inputs: TermInputs) -> torch.Tensor:
        if inputs.teacher_logits is None:  # the teacher's head runs a chunk of positions at a time
            return chunked_soft_label_kd(
                inputs.student_logits,
                inputs.teacher_final_hidden,
                inputs.teacher_head,
                inputs.mask,
                self.temperature,
                self.divergence,
                self.chunk_tokens,
            )
        return soft_label_kd(
            inputs.teacher_logits, inputs.student_logits, inputs.mask, self.temperature, self.divergence
        )


class CachedTopKKD(Term):
    """``T² · KL`` against the cached top-k teacher distribution: no teacher forward, no teacher in memory.

    The temperature is the cache's (chosen when the cache is built, part of its key).
    """

    needs_cache = True

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        if temperature is None or float(temperature) <= 0:
            raise DistillabError(f"objective: temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def forward(self, inputs: TermInputs) -> torch.Tensor:
        if inputs.teacher_topk_logp is None:
            raise DistillabError(
                "objective: kd_cached needs teacher_cache.enabled=true (the batch has no cached teacher)"
            )
        per_token = forward_kl_topk(
            inputs.teacher_topk_logp,
            inputs.teacher_topk_ids,
            inputs.teacher_tail_logp,
            inputs.student_logits,
            self.temperature,
        )
        return self.temperature**2 * masked_mean(per_token, inputs.mask)


def hard_label_ce(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over unmasked positions. ``(B, T, V), (B, T), (B, T) -> ()``.

    In float32 whatever the autocast state (the logits may come out of a bf16 LM head)."""
    with float32_math(logits):
        per_token = F.cross_entropy(
            logits.float().flatten(0, -2), targets.flatten().clamp_min(0), reduction="none"
        ).view_as(targets)
        return masked_mean(per_token, mask)


def soft_label_kd(
    teacher_logits: torch.Tensor,
    student_logits: torch.Tensor,
    mask: torch.Tensor,
    temperature: float,
    divergence=None,
) -> torch.Tensor:
    """``T² · mean_tokens D(softmax(t/T), softmax(s/T))``, D = forward KL unless given."""
    if divergence is None or divergence is forward_kl:  # the common case, with fewer temporaries
        return temperature**2 * masked_mean(
            forward_kl_from_logits(teacher_logits, student_logits, temperature), mask
        )
    with float32_math(student_logits):
        teacher_logp = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
        student_logp = F.log_softmax(student_logits.float() / temperature, dim=-1)
        return temperature**2 * masked_mean(divergence(teacher_logp, student_logp), mask)
