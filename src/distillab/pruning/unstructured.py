"""Unstructured and 2:4 semi-structured sparsity: masks from scores, applied by zeroing weights.

The result is a dense model with zeros: same files, same kernels. Dense kernels do not skip zeros,
so there is no speed-up from sparsity alone (``bench/prune_inference.py`` measures it); the
benefit is compressibility and sparse-kernel readiness (2:4 is what sparse tensor cores run).
"""

from __future__ import annotations

import torch
from torch import nn

from distillab.errors import DistillabError

SCOPES = ("per_layer", "global")


def check_sparsity(sparsity: float, key: str = "prune.sparsity") -> float:
    if not 0.0 <= float(sparsity) < 1.0:
        raise DistillabError(f"{key}: must be in [0, 1), got {sparsity}")
    return float(sparsity)


def sparsity_masks(
    scores: dict[str, torch.Tensor], sparsity: float, scope: str = "per_layer"
) -> dict[str, torch.Tensor]:
    """Boolean keep-masks that drop the lowest-scoring ``sparsity`` fraction of weights.

    ``per_layer``: that fraction within each matrix (Wanda compares per output row; here per matrix).
    ``global``: one threshold across all matrices (matrices can end up unevenly sparse).
    """
    sparsity = check_sparsity(sparsity)
    if scope not in SCOPES:
        raise DistillabError(f"prune.unstructured.scope: unknown {scope!r}; valid: {', '.join(SCOPES)}")
    if scope == "global":
        flat = torch.cat([s.reshape(-1) for s in scores.values()])
        k = int(sparsity * flat.numel())
        if k == 0:
            return {name: torch.ones_like(s, dtype=torch.bool) for name, s in scores.items()}
        threshold = flat.kthvalue(k).values
        return {name: s > threshold for name, s in scores.items()}
    masks = {}
    for name, s in scores.items():
        k = int(sparsity * s.numel())
        keep = torch.ones(s.numel(), dtype=torch.bool)
        if k:
            keep[s.reshape(-1).argsort()[:k]] = False
        masks[name] = keep.view_as(s)
    return masks


def two_four_masks(scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """2:4: in every group of 4 consecutive input weights of a row, keep the 2 highest-scoring."""
    masks = {}
    for name, s in scores.items():
        if s.shape[-1] % 4:
            raise DistillabError(
                f"prune.unstructured.pattern: 2:4 needs inputs in multiples of 4; {name} has {s.shape[-1]}"
            )
        groups = s.reshape(*s.shape[:-1], -1, 4)
        top2 = groups.topk(2, dim=-1).indices
        keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, top2, True)
        masks[name] = keep.view_as(s)
    return masks


@torch.no_grad()
def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    modules = dict(model.named_modules())
    for name, keep in masks.items():
        weight = modules[name].weight
        weight.mul_(keep.to(weight.device, weight.dtype))


def achieved_sparsity(model: nn.Module, names: list[str]) -> dict[str, float]:
    """Fraction of exact zeros: over the pruned matrices, and over all parameters."""
    modules = dict(model.named_modules())
    zeros = sum(int((modules[n].weight == 0).sum()) for n in names)
    total = sum(modules[n].weight.numel() for n in names)
    all_params = sum(p.numel() for p in model.parameters())
    return {"pruned_matrices": zeros / max(total, 1), "all_parameters": zeros / max(all_params, 1)}
