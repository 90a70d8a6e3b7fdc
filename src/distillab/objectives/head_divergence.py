"""A divergence between two models' vocabulary projections, with its gradient formed in the forward pass.

DistillLens projects K interior hidden states of each model through that model's LM head and
compares the two vocabulary distributions. Left to autograd, each ``(n, V)`` chunk of lens logits
would be stored (or, under checkpointing, recomputed) so that backward can differentiate
log-softmax, the divergence and the projection — five ``n x H x V`` matrix products per chunk and
some twenty vocabulary-sized float32 passes, for a scalar loss.

Because the loss is a scalar, its gradients with respect to the student's rows ``x`` and head
weight ``W`` can be finished while the chunk is in hand (the approach of Liger-Kernel's fused
linear losses): ``G = dL/dlogits`` for the chunk, then ``dL/dx = G W`` and ``dL/dW += Gᵀ x``.
Backward only scales the two stored gradients by the incoming factor. Per chunk that is four
matrix products (teacher logits, student logits, ``G W``, ``Gᵀ x``), no recomputation, and for
JSD an analytic ``G`` in a handful of passes. Memory: one ``(V, H)`` float32 buffer for ``dL/dW``
(113 MB for SmolLM2) plus one chunk's temporaries, however many rows and layer pairs go in —
all pairs share the student's head, so they are simply more rows of one call.

The value and every gradient equal autograd's (``tests/test_intermediate.py`` checks them
against the plain formula); vocabulary math is float32 whatever the autocast.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from distillab.objectives.divergences import _LOG_FLOOR, Divergence, row_dot

# (teacher log-probs (n, V), student logits (n, V), temperature, scratch, need_grad)
#   -> (values (n,), dL/dlogits (n, V) or None when not need_grad).
# Both inputs are scratch the function may overwrite; ``scratch(name)`` lends an extra (n, V) buffer.
ValueAndGrad = Callable[..., tuple[torch.Tensor, torch.Tensor | None]]


def jsd_value_and_grad(beta: float) -> ValueAndGrad:
    """Generalized JSD_β(p, q) per row and its gradient with respect to the student's logits.

    With m = β·p + (1−β)·q and q = softmax(z / T): ∂JSD/∂q_i = (1−β)·log(q_i / m_i) (the terms
    from m cancel), so ∂JSD/∂z_i = q_i·(g_i − Σ_j q_j g_j) / T with g = (1−β)·log(q / m), and
    Σ_j q_j g_j is the (1−β)·KL(q ‖ m) half of the value itself. m is formed in probability
    space and floored at the smallest normal float: where p and q both underflow, the terms
    they weight are zero either way. Log-probabilities are floored at ``_LOG_FLOOR`` as in
    :mod:`divergences`, so a −inf logit (a masked vocabulary entry) weighs 0, not NaN.
    """
    tiny = torch.finfo(torch.float32).tiny

    def value_and_grad(t_logp, s_logits, temperature, scratch, need_grad=True):
        log_q = s_logits.div_(temperature)
        log_q.sub_(torch.logsumexp(log_q, -1, keepdim=True)).clamp_min_(_LOG_FLOOR)
        t_logp.clamp_min_(_LOG_FLOOR)
        q, p = torch.exp(log_q, out=scratch("q")), torch.exp(t_logp, out=scratch("p"))
        teacher_part = row_dot(p, t_logp)  # Σ p log p, before t_logp's buffer becomes log m
        log_m = torch.mul(p, beta, out=t_logp).add_(q, alpha=1.0 - beta).clamp_min_(tiny).log_()
        teacher_part -= row_dot(p, log_m)  # KL(p ‖ m)
        g = log_q.sub_(log_m).mul_(1.0 - beta)  # (1−β)·log(q/m), in place of log_q
        student_part = row_dot(q, g)  # (1−β)·KL(q ‖ m)
        if not need_grad:
            return beta * teacher_part + student_part, None
        grad = g.sub_(student_part.unsqueeze(-1)).mul_(q).div_(temperature)
        return beta * teacher_part + student_part, grad

    return value_and_grad


def autograd_value_and_grad(divergence: Divergence) -> ValueAndGrad:
    """Any divergence of :mod:`distillab.objectives.divergences`, differentiated by autograd on one chunk."""

    def value_and_grad(t_logp, s_logits, temperature, scratch, need_grad=True):
        if not need_grad:  # also under inference_mode (Lightning's validation), where enable_grad cannot help
            return divergence(t_logp, F.log_softmax(s_logits / temperature, -1)), None
        with torch.enable_grad():
            z = s_logits.requires_grad_(True)
            values = divergence(t_logp, F.log_softmax(z / temperature, -1))
            (grad,) = torch.autograd.grad(values.sum(), z)
        return values.detach(), grad

    return value_and_grad


class _Scratch:
    """(rows, V) float32 buffers allocated once per call and lent chunk after chunk.

    Fresh vocabulary-sized allocations cost as much as an elementwise pass here (page faults
    on every 50 MB block), so the chunk loop reuses the same few.
    """

    def __init__(self, rows: int, vocab: int, device: torch.device):
        self.rows, self.vocab, self.device, self.buffers = rows, vocab, device, {}

    def lend(self, n: int) -> Callable[[str], torch.Tensor]:
        def scratch(name: str) -> torch.Tensor:
            if name not in self.buffers:
                self.buffers[name] = torch.empty(
                    self.rows, self.vocab, dtype=torch.float32, device=self.device
                )
            return self.buffers[name][:n]

        return scratch


def _logits_into(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, out: torch.Tensor) -> torch.Tensor:
    """float32 logits ``x wᵀ + b`` written into ``out``; under autocast (or with bf16 weights) the
    product keeps that dtype and is widened on the copy."""
    if torch.is_autocast_enabled(x.device.type) or x.dtype != torch.float32 or w.dtype != torch.float32:
        return out.copy_(F.linear(x, w, b))
    torch.mm(x, w.T, out=out)
    return out if b is None else out.add_(b)


class _HeadDivergenceSum(torch.autograd.Function):
    """Σ_rows D(softmax(head_t(x_t) / T) ‖ softmax(head_s(x_s) / T)); grads for x_s and the student head."""

    @staticmethod
    def forward(ctx, x_s, w_s, b_s, x_t, w_t, b_t, value_and_grad, temperature, chunk_tokens, grad_enabled):
        # needs_input_grad follows requires_grad, not grad mode: validation must not pay for gradients
        want_x, want_w, want_b = (grad_enabled and ctx.needs_input_grad[i] for i in range(3))
        autocast = torch.is_autocast_enabled(x_s.device.type)
        on = {"dtype": torch.float32, "device": x_s.device}
        grad_x = torch.zeros(x_s.shape, **on) if want_x else None
        grad_w = torch.zeros(w_s.shape, **on) if want_w else None
        grad_b = torch.zeros(b_s.shape, **on) if want_b else None
        total = torch.zeros((), **on)
        work = _Scratch(min(chunk_tokens, x_s.shape[0]), w_s.shape[0], x_s.device)
        for start in range(0, x_s.shape[0], chunk_tokens):
            rows = slice(start, start + chunk_tokens)
            xs, xt = x_s[rows], x_t[rows]
            scratch = work.lend(xs.shape[0])
            t_logp = _logits_into(xt, w_t, b_t, scratch("teacher_logits")).div_(temperature)
            t_logp.sub_(torch.logsumexp(t_logp, -1, keepdim=True))
            s_logits = _logits_into(xs, w_s, b_s, scratch("student_logits"))
            values, g = value_and_grad(t_logp, s_logits, temperature, scratch, want_x or want_w or want_b)
            total += values.sum()
            if want_x and autocast:
                grad_x[rows] = g @ w_s  # a bf16 product, as a plain backward under autocast would be
            elif want_x:
                torch.mm(g, w_s.float(), out=grad_x[rows])
            if want_w and autocast:
                grad_w += g.T @ xs
            elif want_w:
                grad_w.addmm_(g.T, xs.float())
            if want_b:
                grad_b += g.sum(0)
        ctx.grads, ctx.dtypes = (
            (grad_x, grad_w, grad_b),
            (x_s.dtype, w_s.dtype, None if b_s is None else b_s.dtype),
        )
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grad_x, grad_w, grad_b = (
            None if g is None else (g * grad_total).to(dtype)
            for g, dtype in zip(ctx.grads, ctx.dtypes, strict=True)
        )
        ctx.grads = None
        return grad_x, grad_w, grad_b, None, None, None, None, None, None, None


def head_divergence_sum(
    x_s: torch.Tensor,
    student_head: nn.Linear,
    x_t: torch.Tensor,
    teacher_head: nn.Linear,
    value_and_grad: ValueAndGrad,
    temperature: float = 1.0,
    chunk_tokens: int = 256,
) -> torch.Tensor:
    """Sum over rows of D(teacher lens ‖ student lens). ``(N, H_s), (N, H_t) -> ()``, differentiable in x_s and the student head.

    ``x_s``/``x_t`` are the rows after each model's final norm (autograd handles the norm); the
    teacher side is never differentiated. ``chunk_tokens`` rows are projected at a time.
    """
    return _HeadDivergenceSum.apply(
        x_s,
        student_head.weight,
        student_head.bias,
        x_t.detach(),
        teacher_head.weight.detach(),
        None if teacher_head.bias is None else teacher_head.bias.detach(),
        value_and_grad,
        float(temperature),
        int(chunk_tokens),
        torch.is_grad_enabled(),
    )
