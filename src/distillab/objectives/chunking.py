"""Token-chunked, checkpointed loss sums: bounded memory for vocabulary-sized intermediates.

A divergence between two ``(N, V)`` distributions builds several ``(N, V)`` float32 temporaries
(log-softmaxes, mixtures, their gradients). For N = 1k tokens and a 49k vocabulary each is 200 MB.
:func:`chunked_masked_mean` keeps only the unmasked rows, evaluates the loss ``chunk_tokens`` rows
at a time under activation checkpointing (recomputed in backward, not stored), and sums: at most
one chunk's temporaries exist at any moment, forward or backward.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.checkpoint import checkpoint

RowLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (n, ...) x2 -> (n,) per-row values


def chunked_masked_mean(
    row_loss: RowLoss,
    student: torch.Tensor,
    teacher: torch.Tensor,
    mask: torch.Tensor,
    chunk_tokens: int = 256,
) -> torch.Tensor:
    """Mean of ``row_loss(student_rows, teacher_rows)`` over rows where ``mask`` is true.

    ``student``/``teacher``: ``(B, T, D_s)``/``(B, T, D_t)`` (logits or hidden states); ``mask``
    ``(B, T)``. The teacher side should not need gradients (``row_loss`` decides what it does).
    """
    keep = mask.reshape(-1).bool()
    s_rows = student.reshape(-1, student.shape[-1])[keep]
    t_rows = teacher.reshape(-1, teacher.shape[-1])[keep]
    if s_rows.shape[0] == 0:
        return student.new_zeros((), dtype=torch.float32)

    def chunk_sum(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return row_loss(s, t).float().sum()

    total = student.new_zeros((), dtype=torch.float32)
    for start in range(0, s_rows.shape[0], chunk_tokens):
        s, t = s_rows[start : start + chunk_tokens], t_rows[start : start + chunk_tokens]
        use_checkpoint = torch.is_grad_enabled() and s.requires_grad
        total = total + (
            checkpoint(chunk_sum, s, t, use_reentrant=False) if use_checkpoint else chunk_sum(s, t)
        )
    return total / s_rows.shape[0]
