"""Width pruning: attention heads and MLP neurons -> a smaller *dense* model that reloads with
``from_pretrained`` (Llama/Qwen2/Mistral-style ``self_attn.{q,k,v,o}_proj`` and
``mlp.{gate,up,down}_proj``).

HF configs hold one head count and one intermediate size for all layers, so every layer keeps the
same *number* of heads/neurons; *which* ones each layer keeps comes from its own scores.

Grouped-query attention: query heads are grouped under key/value heads. With ``num_key_value_heads``
kv groups of ``g`` query heads each, a cut keeps whole kv groups (the best by summed score) and, in
each kept group, its best ``g'`` query heads, where ``g' = num_attention_heads / num_key_value_heads``
(new counts). So the new counts must divide evenly and cannot grow — anything else breaks groups.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from distillab.errors import DistillabError
from distillab.models.surgery import attention_head_dim, decoder_layers

log = logging.getLogger(__name__)


def structure_scores(
    weight_scores: dict[str, torch.Tensor], model: nn.Module
) -> dict[str, list[torch.Tensor]]:
    """Per layer: a score per query head, per kv head and per MLP neuron (sums of weight scores)."""
    cfg = model.config
    head_dim = attention_head_dim(cfg)
    out: dict[str, list[torch.Tensor]] = {"q_heads": [], "kv_heads": [], "neurons": []}
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        q = weight_scores[p + "self_attn.q_proj"].reshape(cfg.num_attention_heads, head_dim, -1).sum((1, 2))
        o = weight_scores[p + "self_attn.o_proj"].reshape(-1, cfg.num_attention_heads, head_dim).sum((0, 2))
        k = weight_scores[p + "self_attn.k_proj"].reshape(cfg.num_key_value_heads, head_dim, -1).sum((1, 2))
        v = weight_scores[p + "self_attn.v_proj"].reshape(cfg.num_key_value_heads, head_dim, -1).sum((1, 2))
        out["q_heads"].append(q + o)
        out["kv_heads"].append(k + v)
        neurons = weight_scores[p + "mlp.gate_proj"].sum(1) + weight_scores[p + "mlp.up_proj"].sum(1)
        out["neurons"].append(neurons + weight_scores[p + "mlp.down_proj"].sum(0))
    return out


def check_head_counts(cfg, num_heads: int, num_kv_heads: int) -> None:
    heads, kv = cfg.num_attention_heads, cfg.num_key_value_heads
    if not 1 <= num_kv_heads <= kv:
        raise DistillabError(f"prune.width.num_key_value_heads: {num_kv_heads} outside 1..{kv}")
    if not num_kv_heads <= num_heads <= heads or num_heads % num_kv_heads:
        raise DistillabError(
            f"prune.width.num_attention_heads: {num_heads} does not keep grouped-query groups with "
            f"{num_kv_heads} kv heads; valid: a multiple of {num_kv_heads} up to "
            f"{num_kv_heads * (heads // kv)}"
        )
    if num_heads // num_kv_heads > heads // kv:
        raise DistillabError(
            f"prune.width.num_attention_heads: {num_heads} would put {num_heads // num_kv_heads} query heads on "
            f"each kv head; the model has {heads // kv} per group (at most {num_kv_heads * (heads // kv)})"
        )


def select_heads(
    q_scores: torch.Tensor, kv_scores: torch.Tensor, num_heads: int, num_kv_heads: int
) -> tuple[list[int], list[int]]:
    """Kept kv heads, and kept query heads (in kv-group order), for one layer."""
    kv, heads = kv_scores.numel(), q_scores.numel()
    group = heads // kv
    group_totals = kv_scores + q_scores.view(kv, group).sum(1)
    keep_kv = sorted(group_totals.topk(num_kv_heads).indices.tolist())
    per_group = num_heads // num_kv_heads
    keep_q = []
    for g in keep_kv:
        members = q_scores[g * group : (g + 1) * group]
        keep_q += sorted((g * group + members.topk(per_group).indices).tolist())
    return keep_q, keep_kv


def _rows(linear: nn.Linear, index: torch.Tensor) -> None:
    linear.weight = nn.Parameter(linear.weight.data[index].clone())
    if linear.bias is not None:
        linear.bias = nn.Parameter(linear.bias.data[index].clone())
    linear.out_features = index.numel()


def _cols(linear: nn.Linear, index: torch.Tensor) -> None:
    linear.weight = nn.Parameter(linear.weight.data[:, index].clone())
    linear.in_features = index.numel()


def _head_rows(heads: list[int], head_dim: int) -> torch.Tensor:
    return torch.tensor([h * head_dim + d for h in heads for d in range(head_dim)], dtype=torch.long)


@torch.no_grad()
def prune_heads(
    model: nn.Module, scores: dict[str, list[torch.Tensor]], num_heads: int, num_kv_heads: int | None = None
) -> dict[str, list[list[int]]]:
    """Cut every layer to ``num_heads`` query / ``num_kv_heads`` kv heads in place; return the kept heads."""
    cfg = model.config
    num_kv_heads = cfg.num_key_value_heads if num_kv_heads is None else int(num_kv_heads)
    check_head_counts(cfg, int(num_heads), num_kv_heads)
    head_dim = attention_head_dim(cfg)
    kept: dict[str, list[list[int]]] = {"q_heads": [], "kv_heads": []}
    for i, layer in enumerate(decoder_layers(model)):
        keep_q, keep_kv = select_heads(
            scores["q_heads"][i], scores["kv_heads"][i], int(num_heads), num_kv_heads
        )
        attn = layer.self_attn
        _rows(attn.q_proj, _head_rows(keep_q, head_dim))
        _rows(attn.k_proj, _head_rows(keep_kv, head_dim))
        _rows(attn.v_proj, _head_rows(keep_kv, head_dim))
        _cols(attn.o_proj, _head_rows(keep_q, head_dim))
        attn.num_key_value_groups = int(num_heads) // num_kv_heads
        for attr, value in (("num_heads", int(num_heads)), ("num_key_value_heads", num_kv_heads)):
            if hasattr(attn, attr):
                setattr(attn, attr, value)
        kept["q_heads"].append(keep_q)
        kept["kv_heads"].append(keep_kv)
    cfg.head_dim = head_dim  # explicit: hidden_size / num_heads no longer gives it
    cfg.num_attention_heads, cfg.num_key_value_heads = int(num_heads), num_kv_heads
    log.info("pruned heads: %d query / %d kv per layer", num_heads, num_kv_heads)
    return kept


@torch.no_grad()
def prune_neurons(
    model: nn.Module, scores: dict[str, list[torch.Tensor]], intermediate_size: int
) -> list[list[int]]:
    """Keep the ``intermediate_size`` best MLP neurons of every layer, in place; return them."""
    cfg = model.config
    if not 1 <= int(intermediate_size) <= cfg.intermediate_size:
        raise DistillabError(
            f"prune.width.intermediate_size: {intermediate_size} outside 1..{cfg.intermediate_size}"
        )
    kept = []
    for i, layer in enumerate(decoder_layers(model)):
        keep = scores["neurons"][i].topk(int(intermediate_size)).indices.sort().values
        _rows(layer.mlp.gate_proj, keep)
        _rows(layer.mlp.up_proj, keep)
        _cols(layer.mlp.down_proj, keep)
        if hasattr(layer.mlp, "intermediate_size"):
            layer.mlp.intermediate_size = int(intermediate_size)
        kept.append(keep.tolist())
    cfg.intermediate_size = int(intermediate_size)
    log.info("pruned MLP neurons: %d per layer", intermediate_size)
    return kept
