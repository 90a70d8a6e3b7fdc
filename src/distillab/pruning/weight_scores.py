"""Per-weight importance of the decoder's linear layers (embeddings and LM head are never pruned).

- ``magnitude``: |w|
- ``gradient``: |Σ ∂L/∂w| over the calibration set (L = next-token cross-entropy)
- ``taylor``: first-order Taylor, |w · Σ ∂L/∂w| — the loss change if w were zeroed
- ``wanda`` (arXiv 2306.11695): |w| · ‖x_j‖₂, the weight times the L2 norm of its input feature
  over all calibration tokens

Each returns ``{parameter name: score tensor shaped like the weight}``; higher = more important.
They are named in ``pruning/scores.py``, which says where each is valid.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from distillab.models.surgery import decoder_layers
from distillab.precision import in_run_precision


def prunable_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """The ``nn.Linear`` modules inside decoder layers, by their full module name."""
    layers = decoder_layers(model)
    found = {}
    for i, layer in enumerate(layers):
        for name, module in layer.named_modules():
            if isinstance(module, nn.Linear):
                found[f"model.layers.{i}.{name}"] = module
    return found


@torch.no_grad()
@in_run_precision
def input_feature_norms(
    model: nn.Module, linears: dict[str, nn.Linear], batches: Sequence[torch.Tensor]
) -> dict[str, torch.Tensor]:
    """‖x_j‖₂ over all calibration tokens, per input feature j of each linear layer."""
    squares = {name: torch.zeros(m.in_features, dtype=torch.float64) for name, m in linears.items()}

    def hook(name):
        def record(_module, args, _output):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).double()
            squares[name] += (x * x).sum(0).cpu()

        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in linears.items()]
    model.eval()
    try:
        for ids in batches:
            model(input_ids=ids)
    finally:
        for handle in handles:
            handle.remove()
    return {name: s.sqrt().float() for name, s in squares.items()}


def accumulated_gradients(
    model: nn.Module, linears: dict[str, nn.Linear], batches: Sequence[torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Σ over calibration batches of ∂(next-token CE)/∂W for each linear weight; model unchanged."""
    flags = {p: p.requires_grad for p in model.parameters()}
    model.eval()
    model.requires_grad_(False)
    for m in linears.values():
        m.weight.requires_grad_(True)
        m.weight.grad = None
    try:
        for ids in batches:
            logits = model(input_ids=ids).logits[:, :-1]
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1))
            loss.backward()
        return {name: m.weight.grad.detach().float().clone() for name, m in linears.items()}
    finally:
        for m in linears.values():
            m.weight.grad = None
        for p, flag in flags.items():
            p.requires_grad_(flag)


# -- the scores by name: (model, its prunable linears, calibration batches) -> {name: score} ------------


def magnitude(model, linears, batches):
    return {name: m.weight.detach().abs().float() for name, m in linears.items()}


def wanda(model, linears, batches):
    norms = input_feature_norms(model, linears, batches)
    return {name: m.weight.detach().abs().float() * norms[name][None, :] for name, m in linears.items()}


def gradient(model, linears, batches):
    return {name: g.abs() for name, g in accumulated_gradients(model, linears, batches).items()}


def taylor(model, linears, batches):
    grads = accumulated_gradients(model, linears, batches)
    return {name: (linears[name].weight.detach().float() * g).abs() for name, g in grads.items()}
