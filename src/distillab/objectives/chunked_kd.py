"""Soft-label KD without the teacher's full logits: its head runs over a few positions at a time.

With a 262k vocabulary (Gemma) one (4 × 256 × V) float32 tensor is 1 GB, and plain KD holds several:
the teacher's logits, its log-probabilities and probabilities, the student's tempered logits
saved for backward. Here the teacher hands over its final hidden states (``H`` wide, not ``V``),
and for each chunk of ``chunk_tokens`` positions the teacher's logits are formed, the divergence
is evaluated and its gradient with respect to the student's logits is written straight into one
buffer (the loss is a scalar, so the gradient can be finished while the chunk is in hand, as in
Liger-Kernel's fused losses and :mod:`head_divergence`). Backward only scales that buffer. Peak:
the student's logits, one gradient buffer of their size, one chunk of teacher work.

Forward KL has an analytic gradient with respect to the student's logits ``s``:
``T² · ∂KL/∂s = T · (q − p)`` with ``q = softmax(s/T)``;
other divergences are differentiated by autograd one chunk at a time. Values and gradients equal
:func:`terms.soft_label_kd` on full logits (``tests/test_chunked_kd.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from distillab.compiling import kernel
from distillab.objectives.divergences import _LOG_FLOOR, Divergence, forward_kl, row_dot
from distillab.precision import float32_math

# (student rows (n, V) detached, their flat indices (n,), offset of the chunk) -> (scaled values (n,),
# scaled dL/drows (n, V) or None, best already in the rows' dtype). The caller's scale (1 / rows, T²,
# weights) is folded in.
RowValueAndGrad = Callable[[torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor | None]]


class _RowLoss(torch.autograd.Function):
    """``Σ`` of a per-row loss over some rows of ``(…, V)`` logits, each chunk's gradient written into
    one buffer during forward; backward scales that buffer (shared by kd, ce and cross_kd).

    The buffer has the logits' dtype: autograd hands the logits a gradient of their own dtype
    anyway, and a bf16 buffer halves the memory traffic of writing and scaling it."""

    @staticmethod
    def forward(ctx, logits, rows, value_and_grad, chunk_tokens, need_grad):
        flat = logits.reshape(-1, logits.shape[-1])
        n = rows.numel()
        first = int(rows[0]) if n else 0
        # every position trained on (packed text): slices, not gathers and scatters
        contiguous = n > 0 and bool((rows == torch.arange(first, first + n, device=rows.device)).all())
        grad = None
        if need_grad:  # every row in ``rows`` is written below; only the others need zeros
            grad = torch.empty(flat.shape, dtype=flat.dtype, device=flat.device)
            untouched = torch.ones(flat.shape[0], dtype=torch.bool, device=flat.device)
            untouched[rows] = False
            grad.index_fill_(0, untouched.nonzero().squeeze(1), 0.0)
        total = torch.zeros((), dtype=torch.float32, device=flat.device)
        for start in range(0, n, chunk_tokens):
            idx = rows[start : start + chunk_tokens]
            span = slice(first + start, first + start + idx.numel())
            chunk = flat[span] if contiguous else flat[idx]
            values, chunk_grad = value_and_grad(chunk.detach(), idx, start)
            total += values.sum()
            if need_grad and contiguous:
                grad[span].copy_(chunk_grad)
            elif need_grad:
                grad.index_copy_(0, idx, chunk_grad.to(grad.dtype))
        # an intermediate, not an input or output: kept on ctx (save_for_backward is for those)
        ctx.grad, ctx.shape, ctx.need_grad = grad, logits.shape, need_grad
        return total

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        grad, ctx.grad = ctx.grad, None
        if grad is None:
            if ctx.need_grad:
                raise RuntimeError(
                    "a chunked loss's gradient was used already (backward runs once per forward)"
                )
            return None, None, None, None, None
        grad = grad.mul_(grad_output)  # the buffer is ours alone: scale it in place, no second copy
        return grad.view(ctx.shape), None, None, None, None


def row_loss(
    logits: torch.Tensor, rows: torch.Tensor, value_and_grad: RowValueAndGrad, chunk_tokens: int
) -> torch.Tensor:
    """Differentiable ``Σ`` of ``value_and_grad``'s values over ``rows`` of ``logits`` (flat indices)."""
    need_grad = torch.is_grad_enabled() and logits.requires_grad
    return _RowLoss.apply(logits, rows, value_and_grad, int(chunk_tokens), need_grad)


def _value_and_grad(t_logits, s_logits, temperature, divergence, need_grad, scale):
    """Per-row divergence of the tempered distributions and its gradient w.r.t. the student logits,
    both times ``scale``."""
    if divergence is forward_kl:
        return _forward_kl_value_and_grad(t_logits, s_logits, temperature, need_grad, scale)
    with torch.enable_grad():
        leaf = s_logits.float().requires_grad_(need_grad)
        t_logp = F.log_softmax(t_logits.float() / temperature, dim=-1)
        values = divergence(t_logp, F.log_softmax(leaf / temperature, dim=-1))
        if not need_grad:
            return values.detach() * scale, None
        (chunk_grad,) = torch.autograd.grad(values.sum(), leaf)
    return values.detach() * scale, chunk_grad.mul_(scale)


@kernel  # compiled under speed.compile=auto|true: the passes over the chunk fused (7.4x on a Xeon: bench/kernels.py)
def _forward_kl_value_and_grad(t_logits, s_logits, temperature, need_grad, scale=1.0):
    """``scale ·`` KL(p ‖ q) per row as ``Σ p log p − Σ p z + logsumexp(z)`` (z = s/T) and ``scale ·
    ∂/∂s = scale · (q − p)/T`` in the student logits' dtype, in three vocabulary-sized buffers per
    chunk (log p, p, z -> q − p), the sums as batched products."""
    log_p = t_logits.float().div(temperature)
    log_p.sub_(torch.logsumexp(log_p, -1, keepdim=True)).clamp_(min=_LOG_FLOOR)
    p = log_p.exp()
    z = s_logits.float().div(temperature)
    lse = torch.logsumexp(z, -1, keepdim=True)
    values = (row_dot(p, log_p) - row_dot(p, z) + lse.squeeze(-1)) * scale
    if not need_grad:
        return values, None
    return values, z.sub_(lse).exp_().sub_(p).mul_(scale / temperature).to(s_logits.dtype)


def chunked_soft_label_kd(
    student_logits: torch.Tensor,
    teacher_hidden: torch.Tensor,
    teacher_head: Callable[[torch.Tensor], torch.Tensor],
    mask: torch.Tensor,
    temperature: float,
    divergence: Divergence = forward_kl,
    chunk_tokens: int = 256,
) -> torch.Tensor:
    """``T² · mean over masked positions of D(softmax(head(h)/T), softmax(s/T))``, the teacher's
    logits formed ``chunk_tokens`` positions at a time. ``(B, T, V), (B, T, H), (B, T) -> ()``."""
    flat_t = teacher_hidden.reshape(-1, teacher_hidden.shape[-1])
    rows = mask.reshape(-1).nonzero().squeeze(1)
    scale = float(temperature) ** 2 / max(int(rows.numel()), 1)
    need_grad = torch.is_grad_enabled() and student_logits.requires_grad

    def kd_rows(s_logits, idx, start):
        with torch.no_grad():
            t_logits = teacher_head(flat_t[idx])
        with float32_math(s_logits):
            return _value_and_grad(t_logits, s_logits, float(temperature), divergence, need_grad, scale)

    return row_loss(student_logits, rows, kd_rows, chunk_tokens)
