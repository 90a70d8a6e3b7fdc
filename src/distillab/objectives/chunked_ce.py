"""Cross-entropy on the data's next tokens, a chunk of positions at a time with its gradient formed
in the forward pass (the compiled form of :func:`terms.hard_label_ce`).

Per row with logits ``z`` and target ``y``: ``CE = logsumexp(z) − z_y`` and ``∂CE/∂z = softmax(z) −
onehot(y)``. Under ``speed.compile=auto|true`` the kernel compiles into a few passes over each
chunk and writes the gradient into the one buffer :func:`chunked_kd.row_loss` keeps, instead of
autograd saving a float32 log-softmax of every position and differentiating it in backward
(177.5 vs 271.8 ms per 1,024 × 49,152 forward and backward on a 2-core Xeon: ``bench/kernels.py``).
Eager (``speed.compile=false``) keeps ``F.cross_entropy``. Values and gradients equal it within
float32 rounding (``tests/test_compiling.py``).
"""

from __future__ import annotations

import torch

from distillab.compiling import kernel
from distillab.objectives.chunked_kd import row_loss
from distillab.precision import float32_math


@kernel  # compiled under speed.compile=auto|true
def _cross_entropy_value_and_grad(logits, targets, need_grad, scale=1.0):
    """``scale · (logsumexp(z) − z_y)`` per row and, if ``need_grad``, ``scale · (softmax(z) −
    onehot(y))`` in the logits' dtype (the math in float32)."""
    z = logits.float()
    lse = torch.logsumexp(z, -1, keepdim=True)
    values = (lse.squeeze(-1) - z.gather(-1, targets[:, None]).squeeze(-1)) * scale
    if not need_grad:
        return values, None
    grad = z.sub_(lse).exp_().scatter_add_(-1, targets[:, None], torch.full_like(lse, -1.0))
    return values, grad.mul_(scale).to(logits.dtype)


def chunked_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, chunk_tokens: int = 256
) -> torch.Tensor:
    """Mean next-token cross-entropy over unmasked positions, ``chunk_tokens`` rows at a time.
    ``(B, T, V), (B, T), (B, T) -> ()``, like :func:`terms.hard_label_ce`."""
    rows = mask.reshape(-1).nonzero().squeeze(1)
    flat_targets = targets.reshape(-1).clamp_min(0)
    scale = 1.0 / max(int(rows.numel()), 1)
    need_grad = torch.is_grad_enabled() and logits.requires_grad

    def ce_rows(s_logits, idx, start):
        with float32_math(s_logits):
            return _cross_entropy_value_and_grad(s_logits, flat_targets[idx], need_grad, scale)

    return row_loss(logits, rows, ce_rows, chunk_tokens)
