"""``cross_kd``: logit distillation from a teacher with another tokenizer (ULD or hybrid).

The training step (``training/distill_module.py``) re-tokenizes each batch for the teacher
(``data/token_alignment.py``) and hands this term the aligned position pairs and the teacher's
final hidden states; the teacher's vocabulary work happens here, ``chunk_tokens`` pairs at a time
and without gradients, so a (pairs × 262k) teacher tensor never exists whole. The math is in
:mod:`cross_vocab`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from distillab.errors import DistillabError
from distillab.objectives.cross_vocab import TeacherSummary, hybrid_distance, summarize_teacher, uld_distance
from distillab.objectives.divergences import get_divergence
from distillab.objectives.terms import Term, TermInputs
from distillab.precision import float32_math

LOSSES = ("uld", "hybrid")


@dataclass
class CrossTokenizerInputs:
    """What a cross-tokenizer term sees besides the student's logits (in ``TermInputs.cross``)."""

    pairs: torch.Tensor  # (N, 3): [b, student position, teacher position] predicting the same next text
    teacher_hidden: torch.Tensor  # (B, T_t, H): the teacher's final (normed) hidden states
    teacher_head: Callable[[torch.Tensor], torch.Tensor]  # (n, H) -> (n, V_t) logits


class CrossTokenizerKD(Term):
    """``loss = mean over aligned pairs of D(teacher, student)``.

    ``loss``: ``uld`` (sorted-probability L1, no token correspondence) or ``hybrid`` (``T² ·
    divergence`` on the shared tokens + one rest bucket, plus ULD on the unshared mass).
    ``top_k``: ranks ULD compares exactly (null: all; the tail enters as a lower bound, see
    :func:`cross_vocab.uld_distance`). Works with the same tokenizer too (every position pairs).
    """

    needs_teacher = True
    cross_tokenizer = True

    def __init__(
        self,
        loss: str = "hybrid",
        temperature: float = 1.0,
        divergence: str = "forward_kl",
        top_k: int | None = 512,
        shared_weight: float = 1.0,
        unshared_weight: float = 1.0,
        chunk_tokens: int = 256,
        **divergence_kwargs: float,
    ):
        super().__init__()
        if loss not in LOSSES:
            raise DistillabError(f"loss: {loss!r} is not one of {', '.join(LOSSES)}")
        if temperature is None or float(temperature) <= 0:
            raise DistillabError(f"temperature: must be > 0, got {temperature}")
        if top_k is not None and int(top_k) < 1:
            raise DistillabError(f"top_k: must be >= 1 or null (every rank), got {top_k}")
        if int(chunk_tokens) < 1:
            raise DistillabError(f"chunk_tokens: must be >= 1, got {chunk_tokens}")
        self.loss, self.temperature = loss, float(temperature)
        self.top_k = None if top_k is None else int(top_k)
        self.divergence = get_divergence(divergence, **divergence_kwargs)
        self.divergence_name = divergence
        self.shared_weight, self.unshared_weight = float(shared_weight), float(unshared_weight)
        self.chunk_tokens = int(chunk_tokens)
        self.student_shared: torch.Tensor | None = None
        self.teacher_shared: torch.Tensor | None = None

    def attach_tokenizers(self, student_tok, teacher_tok) -> None:
        """Hybrid: find the tokens both vocabularies share (once, at setup)."""
        if self.loss != "hybrid":
            return
        from distillab.data.token_alignment import shared_tokens

        self.student_shared, self.teacher_shared = shared_tokens(student_tok, teacher_tok)
        if len(self.student_shared) == 0:
            raise DistillabError("loss: hybrid, but the vocabularies share no token; use loss=uld")

    def describe(self) -> str:
        shared = "" if self.student_shared is None else f", {len(self.student_shared)} shared tokens"
        return f"{self.loss} across tokenizers, T={self.temperature:g}, top_k={self.top_k}{shared}"

    def forward(self, inputs: TermInputs) -> torch.Tensor:
        cross = inputs.cross
        if cross is None:
            raise DistillabError("objective: cross_kd needs the aligned teacher batch (a training step bug)")
        if self.loss == "hybrid" and self.student_shared is None:
            raise DistillabError("objective: cross_kd hybrid before attach_tokenizers (a setup bug)")
        pairs = cross.pairs
        # only positions whose next token is trained on (not padding, not a masked prompt)
        pairs = pairs[inputs.mask[pairs[:, 0], pairs[:, 1]]] if pairs.shape[0] else pairs
        if pairs.shape[0] == 0:
            return inputs.student_logits.new_zeros((), dtype=torch.float32)
        total = inputs.student_logits.new_zeros((), dtype=torch.float32)
        for start in range(0, pairs.shape[0], self.chunk_tokens):
            chunk = pairs[start : start + self.chunk_tokens]
            summary = self._teacher_summary(cross, chunk)
            args = (inputs.student_logits, chunk[:, 0], chunk[:, 1], summary.sorted_probs)
            args += () if summary.shared_logp is None else (summary.shared_logp, summary.rest_logp)
            use_checkpoint = torch.is_grad_enabled() and inputs.student_logits.requires_grad
            total = total + (
                checkpoint(self._chunk_sum, *args, use_reentrant=False)
                if use_checkpoint
                else self._chunk_sum(*args)
            )
        return total / pairs.shape[0]

    @torch.no_grad()
    def _teacher_summary(self, cross: CrossTokenizerInputs, chunk: torch.Tensor):
        rows = cross.teacher_hidden[chunk[:, 0], chunk[:, 2]]
        logits = cross.teacher_head(rows)
        shared = None if self.teacher_shared is None else self.teacher_shared.to(logits.device)
        with float32_math(logits):
            return summarize_teacher(logits, self.temperature, self.top_k, shared)

    def _chunk_sum(self, student_logits, b, j, teacher_sorted, teacher_shared=None, teacher_rest=None):
        with float32_math(student_logits):
            logp = F.log_softmax(student_logits[b, j].float() / self.temperature, dim=-1)
            if teacher_shared is None:
                return uld_distance(logp.exp(), teacher_sorted, self.top_k).sum()
            exact, rest = hybrid_distance(
                logp,
                TeacherSummary(teacher_sorted, teacher_shared, teacher_rest),
                self.student_shared.to(logp.device),
                self.divergence,
                self.top_k,
            )
            return (self.shared_weight * self.temperature**2 * exact + self.unshared_weight * rest).sum()


def teacher_head(model) -> Callable[[torch.Tensor], torch.Tensor]:
    """The teacher's LM head as a function of final hidden states, with its logit soft-cap if any."""
    head = model.get_output_embeddings()
    cap = getattr(model.config, "final_logit_softcapping", None)

    def logits(hidden: torch.Tensor) -> torch.Tensor:
        out = head(hidden)
        return out if not cap else torch.tanh(out / cap) * cap

    return logits
