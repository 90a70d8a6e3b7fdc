"""Token-level divergences between a teacher distribution p and a student distribution q.

Every function takes log-probabilities (log-softmax outputs) of shape ``(..., V)`` and returns one
value per position, shape ``(...)``. Reduction over tokens is separate (:func:`masked_mean`), so
padding never enters a mean. Work stays in log space so near-zero probabilities give finite values
and finite gradients.

The direction is in the name: ``forward_kl(p, q) = KL(p ‖ q)`` (mean-seeking, the classic
Hinton KD); ``reverse_kl(p, q) = KL(q ‖ p)`` (mode-seeking, MiniLLM). Note that
``F.kl_div(input, target)`` computes KL(target ‖ input) — the argument order is easy to get wrong,
which is why these functions exist.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from distillab.errors import DistillabError
from distillab.precision import float32_math

Divergence = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# Log-probabilities below this are treated as this: e^-1e4 is zero in every float format, and the
# clamp keeps -inf (masked vocabulary entries) from turning 0 · (-inf) into NaN values or gradients.
_LOG_FLOOR = -1.0e4


def _kl(log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    """KL(a ‖ b) = Σ a (log a − log b) per position; 0 · log 0 taken as 0."""
    log_a = log_a.clamp_min(_LOG_FLOOR)
    return (log_a.exp() * (log_a - log_b.clamp_min(_LOG_FLOOR))).sum(-1)


def forward_kl(teacher_logp: torch.Tensor, student_logp: torch.Tensor) -> torch.Tensor:
    """KL(p_teacher ‖ q_student), shape ``(..., V) -> (...)``."""
    return _kl(teacher_logp, student_logp)


def reverse_kl(teacher_logp: torch.Tensor, student_logp: torch.Tensor) -> torch.Tensor:
    """KL(q_student ‖ p_teacher), shape ``(..., V) -> (...)``."""
    return _kl(student_logp, teacher_logp)


def _log_mixture(log_a: torch.Tensor, log_b: torch.Tensor, weight_a: float) -> torch.Tensor:
    """log(weight_a · a + (1 − weight_a) · b), computed stably with logsumexp."""
    if weight_a <= 0.0:
        return log_b
    if weight_a >= 1.0:
        return log_a
    return torch.logaddexp(log_a + math.log(weight_a), log_b + math.log1p(-weight_a))


def generalized_jsd(
    teacher_logp: torch.Tensor, student_logp: torch.Tensor, beta: float = 0.5
) -> torch.Tensor:
    """Generalized JSD_β with mixture m = β·p + (1−β)·q: β·KL(p‖m) + (1−β)·KL(q‖m).

    β = 0.5 is the Jensen–Shannon divergence. As β → 0 it tends to 0 (m → q and the p term
    vanishes); callers wanting the KL limits should use forward/reverse KL directly.
    """
    if not 0.0 <= beta <= 1.0:
        raise DistillabError(f"objective: jsd beta must be in [0, 1], got {beta}")
    log_m = _log_mixture(teacher_logp, student_logp, beta)
    return beta * _kl(teacher_logp, log_m) + (1.0 - beta) * _kl(student_logp, log_m)


def skew_forward_kl(
    teacher_logp: torch.Tensor, student_logp: torch.Tensor, alpha: float = 0.1
) -> torch.Tensor:
    """Skew KL (DistiLLM): KL(p ‖ α·p + (1−α)·q). α = 0 is forward KL."""
    return _kl(teacher_logp, _log_mixture(teacher_logp, student_logp, alpha))


def skew_reverse_kl(
    teacher_logp: torch.Tensor, student_logp: torch.Tensor, alpha: float = 0.1
) -> torch.Tensor:
    """Skew reverse KL (DistiLLM): KL(q ‖ α·q + (1−α)·p). α = 0 is reverse KL."""
    return _kl(student_logp, _log_mixture(student_logp, teacher_logp, alpha))


def total_variation(teacher_logp: torch.Tensor, student_logp: torch.Tensor) -> torch.Tensor:
    """Total variation distance ½ Σ |p − q|, in [0, 1]."""
    return 0.5 * (teacher_logp.exp() - student_logp.exp()).abs().sum(-1)


DIVERGENCES: dict[str, Divergence] = {
    "forward_kl": forward_kl,
    "reverse_kl": reverse_kl,
    "jsd": generalized_jsd,
    "skew_forward_kl": skew_forward_kl,
    "skew_reverse_kl": skew_reverse_kl,
    "tvd": total_variation,
}


def get_divergence(name: str, **kwargs: float) -> Divergence:
    """Look a divergence up by its config name; keyword arguments (beta, alpha) are bound."""
    if name not in DIVERGENCES:
        raise DistillabError(f"objective: unknown divergence {name!r}; valid: {', '.join(DIVERGENCES)}")
    fn = DIVERGENCES[name]
    if not kwargs:
        return fn
    return lambda p, q: fn(p, q, **kwargs)


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``values`` (shape ``(B, T)``) over positions where ``mask`` is true.

    Normalises by the number of unmasked tokens, not by batch size: ``batchmean`` over a padded
    batch would count padding.
    """
    if mask is None:
        return values.mean()
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def row_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Σ_j a_ij b_ij per row of two ``(n, V)`` tensors as a batched product: no (n, V) temporary."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).reshape(a.shape[0])


def forward_kl_from_logits(
    teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """KL(softmax(t/T) ‖ softmax(s/T)) per position, straight from logits. ``(..., V) x2 -> (...)``.

    Same value as ``forward_kl(log_softmax(t/T), log_softmax(s/T))``, rewritten as
    ``Σ p·log p − Σ p·s/T + logsumexp(s/T)`` so that only a few vocabulary-sized temporaries exist
    (the teacher side is computed in place, without autograd, and the two sums are matrix products).
    With a 49k vocabulary these temporaries, not FLOPs, dominate the loss's cost on CPU.

    Always float32, autocast or not: under bf16 autocast the two products would run in bf16, and
    ``Σ p·log p − Σ p·s/T + logsumexp(s/T)`` is a small difference of large terms — rounding
    each of them to bf16 cost up to 0.028 nats per token for logits of standard deviation 4 at T = 2
    (measured; tests/test_precision.py), on a KL of ~0.1–1.
    """
    with float32_math(student_logits):
        return _forward_kl_from_logits(teacher_logits, student_logits, temperature)


def _forward_kl_from_logits(teacher_logits, student_logits, temperature):
    vocab = teacher_logits.shape[-1]
    with torch.no_grad():
        log_p = teacher_logits.float() / temperature
        log_p.sub_(torch.logsumexp(log_p, -1, keepdim=True)).clamp_(min=_LOG_FLOOR)  # in place
        p = log_p.exp()
        p_rows = p.reshape(-1, 1, vocab)
        neg_entropy = torch.bmm(p_rows, log_p.reshape(-1, vocab, 1)).reshape(teacher_logits.shape[:-1])
    s = student_logits.float() / temperature
    cross = torch.bmm(p_rows, s.reshape(-1, vocab, 1)).reshape(student_logits.shape[:-1])
    return neg_entropy - cross + torch.logsumexp(s, -1)


def forward_kl_topk(
    teacher_topk_logp: torch.Tensor,
    teacher_topk_ids: torch.Tensor,
    teacher_tail_logp: torch.Tensor,
    student_logits: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """KL(p ‖ q) over k + 1 buckets: the teacher's cached top-k tokens and one tail bucket.

    ``(B, T, k), (B, T, k), (B, T), (B, T, V) -> (B, T)``. The student's distribution is reduced to
    the same buckets (its probabilities at the k ids, and the rest), so with k = V this equals
    :func:`forward_kl` exactly, and for k < V it is the KL of the two coarsened distributions.
    """
    with float32_math(student_logits):
        return _forward_kl_topk(
            teacher_topk_logp, teacher_topk_ids, teacher_tail_logp, student_logits, temperature
        )


def _forward_kl_topk(teacher_topk_logp, teacher_topk_ids, teacher_tail_logp, student_logits, temperature):
    s = student_logits.float() / temperature
    student_topk = s.gather(-1, teacher_topk_ids) - torch.logsumexp(s, -1, keepdim=True)
    student_tail = torch.log1p(-student_topk.exp().sum(-1).clamp(max=1.0 - 1e-6))
    teacher = torch.cat([teacher_topk_logp, teacher_tail_logp.unsqueeze(-1)], dim=-1)
    student = torch.cat([student_topk, student_tail.unsqueeze(-1)], dim=-1)
    return _kl(teacher, student)
