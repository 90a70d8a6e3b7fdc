"""Objective terms: each turns one forward pass of student (and teacher) into a scalar loss.

A term is an ``nn.Module`` (so a later term can own learned parameters, e.g. a projection) whose
``forward`` takes the signals it lists in ``reads`` (:mod:`distillab.objectives.signals`). Add a
term by writing a class here (or in a sibling module) and naming it by ``_target_`` under
``terms:`` in an ``objective/`` config.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from distillab import compiling
from distillab.errors import DistillabError
from distillab.objectives.chunked_ce import chunked_cross_entropy
from distillab.objectives.chunked_kd import chunked_soft_label_kd
from distillab.objectives.divergences import (
    forward_kl,
    forward_kl_from_logits,
    forward_kl_topk,
    get_divergence,
    masked_mean,
)
from distillab.objectives.signals import (
    MASK,
    STUDENT_LOGITS,
    TARGETS,
    TEACHER_FINAL,
    TEACHER_TOPK,
    TermInputs,
)
from distillab.precision import float32_math


class Term(nn.Module):
    """Base class. ``reads`` names the signals the term reads (objectives/signals.py): the training
    step computes their union over the objective's terms, and the term sees only these."""

    reads: frozenset[str] = frozenset()

    def setup(self, student: nn.Module, teacher: nn.Module | None) -> None:
        """Called once the models exist: build layer maps, projections, switch attention kernels."""

    def teardown(self, student: nn.Module, teacher: nn.Module | None) -> None:
        """Called when training ends: undo what ``setup`` did to the models."""

    def describe(self) -> str:
        """One line for the start-of-run log (layer maps and the like)."""
        return ""

    def documents_wanted(self) -> dict | None:
        """A corpus source (``format``, ``files``, ...) this term wants read for it, or None.

        The run reads it and calls ``attach_documents``: terms compute, they do not read files."""
        return None

    def attach_documents(self, tokenizer, documents: list[str]) -> None:
        """Receive the documents ``documents_wanted`` asked for."""

    def forward(self, inputs: TermInputs) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class HardLabelCE(Term):
    """Cross-entropy on the data's next tokens, averaged over unmasked tokens. Under
    ``speed.compile=auto|true`` a compiled kernel over ``chunk_tokens`` positions at a time
    (:mod:`chunked_ce`); eager, ``F.cross_entropy``."""

    reads = frozenset({STUDENT_LOGITS, TARGETS, MASK})

    def __init__(self, chunk_tokens: int = 256):
        super().__init__()
        if int(chunk_tokens) < 1:
            raise DistillabError(f"objective: chunk_tokens must be >= 1, got {chunk_tokens}")
        self.chunk_tokens = int(chunk_tokens)

    def forward(self, inputs: TermInputs) -> torch.Tensor:
        if compiling.current() == "false":
            return hard_label_ce(inputs.student_logits, inputs.targets, inputs.mask)
        return chunked_cross_entropy(inputs.student_logits, inputs.targets, inputs.mask, self.chunk_tokens)


class SoftLabelKD(Term):
    """``T² · D(teacher_T, student_T)`` with D a divergence from :mod:`divergences` (Hinton et al.).

    The T² factor keeps gradient magnitudes comparable across temperatures, so the weight against
    the hard-label term means the same thing at any T.
    """

    reads = frozenset({STUDENT_LOGITS, TEACHER_FINAL, MASK})

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
        final = inputs.teacher_final
        if final.logits is None:  # the teacher's head runs a chunk of positions at a time
            return chunked_soft_label_kd(
                inputs.student_logits,
                final.hidden,
                final.head,
                inputs.mask,
                self.temperature,
                self.divergence,
                self.chunk_tokens,
            )
        return soft_label_kd(
            final.logits, inputs.student_logits, inputs.mask, self.temperature, self.divergence
        )


class CachedTopKKD(Term):
    """``T² · KL`` against the cached top-k teacher distribution: no teacher forward, no teacher in memory.

    The temperature is the cache's (chosen when the cache is built, part of its key).
    """

    reads = frozenset({STUDENT_LOGITS, TEACHER_TOPK, MASK})

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        if temperature is None or float(temperature) <= 0:
            raise DistillabError(f"objective: temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def forward(self, inputs: TermInputs) -> torch.Tensor:
        topk = inputs.teacher_topk
        per_token = forward_kl_topk(
            topk.logp, topk.ids, topk.tail_logp, inputs.student_logits, self.temperature
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
