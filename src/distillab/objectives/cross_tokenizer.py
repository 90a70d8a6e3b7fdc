"""``cross_kd``: logit distillation from a teacher with another tokenizer (ULD or hybrid).

The training step (``training/distill_module.py``) encodes each batch for the teacher too
(``data/token_alignment.py``) and hands this term the aligned position pairs and the teacher's
final hidden states. The work happens ``chunk_tokens`` pairs at a time: the teacher's logits and
summary (no gradients), the loss, and its gradient with respect to those student rows, written into
one buffer (:func:`chunked_kd.row_loss`), so neither a (pairs × 262k) teacher tensor nor a
per-chunk copy of the student's gradient exists. The math is in :mod:`cross_vocab`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from distillab.errors import DistillabError
from distillab.objectives.chunked_kd import row_loss
from distillab.objectives.cross_vocab import TeacherSummary, hybrid_distance, summarize_teacher, uld_distance
from distillab.objectives.divergences import get_divergence
from distillab.objectives.signals import CROSS_TEACHER, MASK, STUDENT_LOGITS, TermInputs
from distillab.objectives.terms import Term
from distillab.precision import cast_linear, float32_math, module_device_type
from distillab.precision import current as current_precision

LOSSES = ("uld", "hybrid")


@dataclass
class CrossTokenizerInputs:
    """What a cross-tokenizer term sees besides the student's logits (the ``cross_teacher`` signal)."""

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

    reads = frozenset({STUDENT_LOGITS, CROSS_TEACHER, MASK})

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
        cross = inputs.cross_teacher
        if self.loss == "hybrid" and self.student_shared is None:
            raise DistillabError("objective: cross_kd hybrid before attach_tokenizers (a setup bug)")
        pairs = cross.pairs
        # only positions whose next token is trained on (not padding, not a masked prompt)
        pairs = pairs[inputs.mask[pairs[:, 0], pairs[:, 1]]] if pairs.shape[0] else pairs
        logits = inputs.student_logits
        rows = pairs[:, 0] * logits.shape[1] + pairs[:, 1]  # flat (b, j) indices into (B·T, V)
        scale = 1.0 / max(int(pairs.shape[0]), 1)
        need_grad = torch.is_grad_enabled() and logits.requires_grad

        def cross_rows(s_logits, idx, start):
            summary = self._teacher_summary(cross, pairs[start : start + idx.numel()])
            with float32_math(s_logits):
                values, grad = self._value_and_grad(s_logits, summary, need_grad)
            return values * scale, None if grad is None else grad.mul_(scale)

        return row_loss(logits, rows, cross_rows, self.chunk_tokens)

    @torch.no_grad()
    def _teacher_summary(self, cross: CrossTokenizerInputs, chunk: torch.Tensor):
        rows = cross.teacher_hidden[chunk[:, 0], chunk[:, 2]]
        logits = cross.teacher_head(rows)
        shared = None if self.teacher_shared is None else self.teacher_shared.to(logits.device)
        with float32_math(logits):
            return summarize_teacher(logits, self.temperature, self.top_k, shared)

    def _value_and_grad(self, s_logits, teacher: TeacherSummary, need_grad: bool):
        """Per-row loss of a chunk of student rows and (autograd, one chunk at a time) its gradient."""
        with torch.enable_grad():
            leaf = s_logits.float().requires_grad_(need_grad)
            logp = F.log_softmax(leaf / self.temperature, dim=-1)
            if teacher.shared_logp is None:
                values = uld_distance(logp.exp(), teacher.sorted_probs, self.top_k)
            else:
                exact, rest = hybrid_distance(
                    logp, teacher, self.student_shared.to(logp.device), self.divergence, self.top_k
                )
                values = self.shared_weight * self.temperature**2 * exact + self.unshared_weight * rest
            if not need_grad:
                return values.detach(), None
            (grad,) = torch.autograd.grad(values.sum(), leaf)
        return values.detach(), grad


def teacher_head(model) -> Callable[[torch.Tensor], torch.Tensor]:
    """The teacher's LM head as a function of final hidden states, with its logit soft-cap if any."""
    head = model.get_output_embeddings()
    cap = getattr(model.config, "final_logit_softcapping", None)
    # Under autocast a frozen weight is cast afresh on every call (autocast caches only weights that
    # require grad), and kd calls the head once per chunk: a 49k x 576 cast each time. The cast is
    # made once per teacher_head() (once per step) instead; autocast would round to the same values.
    frozen_linear = (  # plain weights only: a quantized tensor subclass keeps its own kernels
        type(head) is torch.nn.Linear
        and type(head.weight.data) is torch.Tensor
        and not head.weight.requires_grad
    )
    casts: dict[torch.dtype, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def project(hidden: torch.Tensor) -> torch.Tensor:
        device = hidden.device.type
        if not (frozen_linear and torch.is_autocast_enabled(device)):
            return head(hidden)
        dtype = torch.get_autocast_dtype(device)
        if dtype not in casts:
            bias = None if head.bias is None else head.bias.to(dtype)
            casts[dtype] = (head.weight.to(dtype), bias)
        return cast_linear(*casts[dtype], hidden)

    def logits(hidden: torch.Tensor) -> torch.Tensor:
        out = project(hidden)
        return out if not cap else torch.tanh(out / cap) * cap

    return logits


def head_reproduces_logits(model, input_ids: torch.Tensor) -> bool:
    """Whether ``teacher_head(model)`` applied to the final hidden states gives the model's own
    logits (what kd's chunked path and cross_kd read). Not so for models whose forward rescales
    them afterwards (Granite's ``logits_scaling``, Cohere's ``logit_scale``)."""
    ids = input_ids[:1, :8]
    with torch.no_grad(), current_precision().autocast(module_device_type(model)):
        full = model(input_ids=ids).logits.float()
        part = teacher_head(model)(model.base_model(input_ids=ids).last_hidden_state).float()
    return bool(torch.allclose(full, part, rtol=1e-3, atol=1e-3))
