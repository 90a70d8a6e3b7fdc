"""What a run cost: the ledger every ``results.json`` carries as ``cost`` (and W&B as ``cost/*``), so
recipes compare on compute, not only on tokens.

FLOPs are counted, not measured, from the models' shapes (the usual estimate, Kaplan et al. 2020):

- **forward, per token**: ``2 ×`` the weights of every matrix product (linear layers and the LM head;
  an embedding lookup is free) plus attention's scores and weighted sums, ``2 · 2 · d_attn · s/2`` per
  layer for a causal block of ``s`` tokens (on average a token attends to ``s/2`` others);
- **backward, per token**: the gradient with respect to activations costs one forward of every layer
  from the first one with a trainable parameter up to the head, and the gradient with respect to
  weights ``2 ×`` the trainable matrix weights. Full training: ``≈ 2 ×`` forward. LoRA: activations
  all the way down, weight gradients of the adapters only. The last k layers: only they and the head.
- **teacher**: one forward per training token when the objective reads the teacher online (a cached
  teacher costs nothing here: its cache was paid for once).

Not counted: evaluation (its wall seconds are), calibration scoring and block replacement fits
(their wall seconds are in ``other``), on-policy generation. Wall seconds are by phase: ``train``,
``evaluate``, and ``other`` (loading, scoring, cutting, export).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from distillab.models.surgery import attention_head_dim, decoder_layers


def _matmul_weights(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(
        m.weight.numel()
        for m in module.modules()
        if isinstance(m, nn.Linear) and (m.weight.requires_grad or not trainable_only)
    )  # a LoRA layer's base and its adapters are Linear modules: both are counted


def forward_flops_per_token(model: nn.Module, seq_len: int) -> dict[str, float]:
    """``{"layers": [per decoder layer], "head": the LM head}`` forward FLOPs for one token."""
    config = model.config
    attention = 2 * 2 * config.num_attention_heads * attention_head_dim(config) * seq_len / 2
    layers = [2.0 * _matmul_weights(layer) + attention for layer in decoder_layers(model)]
    head = model.get_output_embeddings()
    return {"layers": layers, "head": 2.0 * head.weight.numel()}


def training_flops_per_token(student: nn.Module, teacher: nn.Module | None, seq_len: int) -> dict[str, float]:
    """Student forward and backward, teacher forward, per training token, for the parameters that
    train now (call it inside the tuning context)."""
    forward = forward_flops_per_token(student, seq_len)
    layers = decoder_layers(student)
    trains = [any(p.requires_grad for p in layer.parameters()) for layer in layers]
    first = trains.index(True) if True in trains else len(layers)
    activation_grads = sum(forward["layers"][first:]) + forward["head"]
    weight_grads = 2.0 * _matmul_weights(student, trainable_only=True)  # the head is a Linear too
    teacher_forward = forward_flops_per_token(teacher, seq_len) if teacher is not None else None
    return {
        "student_forward": sum(forward["layers"]) + forward["head"],
        "student_backward": activation_grads + weight_grads,
        "teacher_forward": (sum(teacher_forward["layers"]) + teacher_forward["head"])
        if teacher_forward
        else 0.0,
    }


def training_flops(per_token: dict[str, float] | None, tokens: int) -> dict[str, float] | None:
    """``per_token × tokens`` for each part, and their ``total``."""
    if per_token is None:
        return None
    flops = {k: v * tokens for k, v in per_token.items()}
    return flops | {"total": sum(flops.values())}


def add_flops(phases: list[dict[str, float] | None]) -> dict[str, float] | None:
    """The FLOPs of several training phases (iterative removal's healing steps), summed per part."""
    present = [p for p in phases if p]
    if not present:
        return None
    return {k: sum(p.get(k, 0.0) for p in present) for k in present[0]}


def combined(ledgers: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The ledger of several runs one after another (a pipeline's stages up to a row): tokens, FLOPs
    and wall seconds summed part by part; None when any run has no ledger (its cost is unknown)."""
    if not ledgers or any(not x for x in ledgers):
        return None
    seconds = [x.get("wall_seconds") or {} for x in ledgers]
    return {
        "train_tokens": sum(x.get("train_tokens") or 0 for x in ledgers),
        "flops": add_flops([x.get("flops") or {"total": 0.0} for x in ledgers]),
        "wall_seconds": {
            k: sum(s.get(k, 0.0) for s in seconds) for k in ("train", "evaluate", "other", "total")
        },
        "device": ledgers[-1].get("device"),
    }


def ledger(results: dict[str, Any], evaluate: float, device: str) -> dict[str, Any]:
    """The ``cost`` block of ``results.json`` from what the run recorded; ``evaluate``: the seconds
    its evaluations took (cache hits cost nothing). A resumed run's training seconds include the
    earlier processes' (Lightning's Timer is in the checkpoint) while its wall time is this process's:
    the total then counts at least the training and evaluation (the earlier processes' other seconds
    are not recorded)."""
    train = float(results.get("train_seconds") or 0.0)
    total = max(float(results.get("wall_seconds") or 0.0), train + evaluate)
    return {
        "train_tokens": results.get("train_tokens") or 0,
        "flops": results.get("train_flops"),
        "wall_seconds": {
            "train": train,
            "evaluate": evaluate,
            "other": max(0.0, total - train - evaluate),
            "total": total,
        },
        "device": device,
    }
