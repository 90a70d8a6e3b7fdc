"""Attention transfer: match the student's attention distributions to the teacher's on mapped layers.

Per query position, each head's attention row is a distribution over keys; the loss is
KL(teacher_row ‖ student_row), averaged over heads, layers and unmasked query positions. With equal
head counts heads are compared one to one; otherwise both sides are averaged over heads first.
Grouped-query attention: keys are repeated to the query heads, so weights are per *query* head.

Memory. Asking a model for ``output_attentions`` needs the eager kernel on *every* layer and keeps
every layer's ``(B, heads, T, T)`` weights alive until backward (2.3x CE-only peak memory on the
real model). Instead both models run a registered attention kernel (``distillab_qk_capture``) that
is SDPA plus one side effect: on the mapped layers only, it keeps the post-RoPE queries and keys
(``(B, heads, T, d)``, small). The term rebuilds the attention log-probabilities from them one
layer pair at a time under activation checkpointing, so at most one pair's ``T x T`` weights exist.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from distillab.models.surgery import decoder_layers
from distillab.objectives.divergences import forward_kl, masked_mean
from distillab.objectives.layer_map import LayerMap, layer_map_for
from distillab.objectives.signals import MASK, STUDENT_QK, TEACHER_QK, TermInputs
from distillab.objectives.terms import Term

log = logging.getLogger(__name__)

CAPTURE_KERNEL = "distillab_qk_capture"
_SLOT = "distillab_qk"  # attribute on a captured layer's attention module: dict of its last q, k, mask


def _sdpa_keeping_qk(module, query, key, value, attention_mask, **kwargs):
    slot = getattr(module, _SLOT, None)
    if slot is not None:
        slot.update(query=query, key=key, mask=attention_mask, scaling=kwargs.get("scaling"))
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register(CAPTURE_KERNEL, _sdpa_keeping_qk)
AttentionMaskInterface.register(CAPTURE_KERNEL, sdpa_mask)  # same masks as SDPA


def install_qk_capture(model: nn.Module, layers: Sequence[int], who: str) -> None:
    """Run ``model`` on the capturing SDPA kernel and keep q/k of ``layers`` after each forward."""
    current = model.config._attn_implementation
    if current != CAPTURE_KERNEL:
        model.distillab_previous_attention = current
        model.set_attn_implementation(CAPTURE_KERNEL)
        if current != "sdpa":
            log.warning("attention transfer: %s runs SDPA with q/k capture instead of %s", who, current)
    for i in layers:
        setattr(decoder_layers(model)[i].self_attn, _SLOT, {})


def remove_qk_capture(model: nn.Module) -> None:
    """Undo :func:`install_qk_capture` (the exported student must not depend on distillab)."""
    for layer in decoder_layers(model):
        if hasattr(layer.self_attn, _SLOT):
            delattr(layer.self_attn, _SLOT)
    previous = getattr(model, "distillab_previous_attention", None)
    if previous is not None:
        model.set_attn_implementation(previous)
        del model.distillab_previous_attention


def take_captured_qk(model: nn.Module) -> dict[int, dict]:
    """The q/k captured by the last forward, per layer index; the slots are emptied (frees memory)."""
    taken = {}
    for i, layer in enumerate(decoder_layers(model)):
        slot = getattr(layer.self_attn, _SLOT, None)
        if slot:
            taken[i] = dict(slot)
            slot.clear()
    return taken


def attention_log_probs(
    query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None, scaling: float | None
) -> torch.Tensor:
    """Attention log-probabilities ``(B, h, T, T)`` from q ``(B, h, T, d)`` and k ``(B, kv, T, d)``.

    ``mask`` is what the model gave its kernel: ``None`` (plain causal), boolean (true = attend) or
    additive float, broadcastable to ``(B, h, T, T)``.
    """
    if key.shape[1] != query.shape[1]:  # grouped-query attention: each kv head serves a query group
        key = key.repeat_interleave(query.shape[1] // key.shape[1], dim=1)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    scores = (query.float() @ key.float().transpose(-1, -2)) * scale
    if mask is None:
        q_len, k_len = scores.shape[-2:]
        mask = torch.ones(q_len, k_len, dtype=torch.bool, device=scores.device).tril(k_len - q_len)
    if mask.dtype == torch.bool:
        # finfo.min, not -inf: fully masked (padding) rows stay finite and contribute zero KL
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    else:
        scores = scores + mask.float()
    return F.log_softmax(scores, dim=-1)


def attention_kl(student_logp: torch.Tensor, teacher_logp: torch.Tensor) -> torch.Tensor:
    """KL(teacher ‖ student) per query, averaged over heads. Log-probs ``(B, h, T, T) x2 -> (B, T)``.

    Different head counts: both sides are head-averaged (in probability) first.
    """
    if student_logp.shape[1] != teacher_logp.shape[1]:
        student_logp = _head_mean(student_logp)
        teacher_logp = _head_mean(teacher_logp)
    return forward_kl(teacher_logp, student_logp).mean(1)


def _head_mean(logp: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(logp, dim=1, keepdim=True) - torch.log(torch.tensor(float(logp.shape[1])))


def _pair_loss(s_q, s_k, t_q, t_k, s_mask, t_mask, s_scale, t_scale, token_mask) -> torch.Tensor:
    with torch.no_grad():
        t_logp = attention_log_probs(t_q, t_k, t_mask, t_scale)
    s_logp = attention_log_probs(s_q, s_k, s_mask, s_scale)
    return masked_mean(attention_kl(s_logp, t_logp), token_mask)


class AttentionTransfer(Term):
    reads = frozenset({STUDENT_QK, TEACHER_QK, MASK})

    def __init__(
        self, layer_map: str = "uniform", pairs: Sequence[Sequence[int]] | None = None, k: int | None = None
    ):
        super().__init__()
        self.map_kind, self.map_pairs, self.map_k = layer_map, pairs, k
        self.layer_map: LayerMap = []

    def setup(self, student: nn.Module, teacher: nn.Module | None) -> None:
        self.layer_map = layer_map_for(self.map_kind, student, teacher, self.map_pairs, self.map_k)
        install_qk_capture(student, [s for s, _ in self.layer_map], "student")
        install_qk_capture(teacher, [t for _, t in self.layer_map], "teacher")

    def teardown(self, student: nn.Module, teacher: nn.Module | None) -> None:
        for model in (student, teacher):
            if model is not None:
                remove_qk_capture(model)

    def describe(self) -> str:
        return f"attention KL on layer pairs (student, teacher) {self.layer_map}"

    def forward(self, inputs: TermInputs) -> torch.Tensor:
        losses = []
        for s, t in self.layer_map:
            sq, tq = inputs.student_qk[s], inputs.teacher_qk[t]
            args = (sq["query"], sq["key"], tq["query"], tq["key"], sq["mask"], tq["mask"])
            args += (sq["scaling"], tq["scaling"], inputs.mask)
            if torch.is_grad_enabled():  # recompute this pair's T x T weights in backward, not store them
                losses.append(checkpoint(_pair_loss, *args, use_reentrant=False))
            else:
                losses.append(_pair_loss(*args))
        return torch.stack(losses).mean()
