"""Cut a contiguous block of decoder layers and stand something in for it, without growing the model.

- :func:`replace_me` (ReplaceMe, arXiv 2505.02819): no training. Layer ``p`` (the last kept before
  the block) writes ``h_p = Y + M`` (``Y``: its residual after attention, ``M``: its MLP's output);
  the block turns that into ``h_out``. A linear map ``T`` is fitted by least squares on calibration
  tokens so that ``Y + M·T ≈ h_out``, i.e. ``M·T ≈ h_out − Y``, and folded into layer ``p``'s
  ``down_proj``: ``M·T = (x·Wᵀ)·T = x·(Tᵀ·W)ᵀ``, so ``W ← Tᵀ·W`` (a bias ``b ← b·T``). The weight keeps
  its shape, so the cut model has exactly the parameters of the plain cut.
- :func:`streamline` (LLM-Streamline, arXiv 2403.19135): the first layer of a block of ``n + 1``
  layers stays and is trained, alone, to map the block's input to its output (mean squared error on
  calibration tokens); the other ``n`` go. Same depth and parameters as cutting ``n`` layers.

The block is the one whose input and output are closest (``angular`` score, Gromov et al.).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn
from transformers import PreTrainedModel

from distillab import precision
from distillab.errors import DistillabError
from distillab.models.surgery import decoder_layers, remove_layers
from distillab.precision import in_run_precision
from distillab.pruning.layer_scores import activation_layer_scores, least_important, residual_stream

log = logging.getLogger(__name__)


def closest_block(
    model: PreTrainedModel, batches: Sequence[torch.Tensor], length: int, protect=()
) -> list[int]:
    """The ``length`` contiguous layers whose input and output are closest (angular distance of the
    last token), avoiding ``protect``."""
    scores = activation_layer_scores(model, batches, ["angular"], angular_block=length)["angular"]
    return least_important(scores, length, protect, contiguous_block=True)


def linear_replacement(mlp_out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``T`` minimizing ``‖mlp_out·T − target‖²`` over tokens (rows), solved in float64."""
    solution = torch.linalg.lstsq(mlp_out.double(), target.double(), driver="gelsd").solution
    return solution.to(mlp_out.dtype)


@torch.no_grad()
def fold_into_down_proj(down_proj: nn.Linear, transform: torch.Tensor) -> None:
    """Make ``down_proj`` output ``output·transform``: ``W ← Tᵀ·W``, ``b ← b·T``."""
    weight = transform.double().T @ down_proj.weight.double()
    down_proj.weight.copy_(weight.to(down_proj.weight.dtype))
    if down_proj.bias is not None:
        down_proj.bias.copy_((down_proj.bias.double() @ transform.double()).to(down_proj.bias.dtype))


@torch.no_grad()
@in_run_precision  # the run's precision, like every other calibration pass (the solve is float64)
def _replacement_pairs(model, batches, block: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per calibration token: layer ``p``'s MLP output ``M`` and ``h_out − Y`` (float32)."""
    p, last = block[0] - 1, block[-1]
    mlp_outs: list[torch.Tensor] = []
    handle = decoder_layers(model)[p].mlp.register_forward_hook(lambda _m, _a, out: mlp_outs.append(out))
    rows, targets = [], []
    try:
        for ids in batches:
            stream = residual_stream(model, ids)  # stream[k + 1]: output of layer k
            m = mlp_outs.pop()
            y = stream[p + 1] - m  # the residual after layer p's attention
            rows.append(m.reshape(-1, m.shape[-1]).float())
            targets.append((stream[last + 1] - y).reshape(-1, m.shape[-1]).float())
    finally:
        handle.remove()
    return torch.cat(rows), torch.cat(targets)


def replace_me(model: PreTrainedModel, batches: Sequence[torch.Tensor], block: list[int]) -> PreTrainedModel:
    """A copy of ``model`` without the contiguous ``block``, its effect folded into the layer before."""
    if block != list(range(block[0], block[0] + len(block))) or block[0] < 1:
        raise DistillabError(
            f"student.remove: ReplaceMe needs one contiguous block after layer 0; got {block}"
        )
    model.eval()
    mlp_out, target = _replacement_pairs(model, batches, block)
    transform = linear_replacement(mlp_out, target)
    energy = target.pow(2).mean()
    residual = (mlp_out @ transform - target).pow(2).mean() / energy
    plain = (mlp_out - target).pow(2).mean() / energy  # the plain cut: T = I
    log.info(
        "ReplaceMe: layers %s replaced by a %dx%d map folded into layer %d's down_proj (relative squared "
        "error %.4f on %d calibration tokens; the plain cut's %.4f)", block, *transform.shape, block[0] - 1,
        residual, len(target), plain,
    )  # fmt: skip
    student = remove_layers(model, block)
    fold_into_down_proj(decoder_layers(student)[block[0] - 1].mlp.down_proj, transform)
    return student


def streamline(
    model: PreTrainedModel,
    batches: Sequence[torch.Tensor],
    block: list[int],
    steps: int = 100,
    lr: float = 1e-3,
) -> PreTrainedModel:
    """A copy of ``model`` in which ``block[0]`` is trained (MSE, Adam, ``steps`` passes over the
    batches in turn) to map the block's input to its output, and ``block[1:]`` are removed."""
    model.eval()
    with torch.no_grad(), precision.current().autocast():
        targets = [residual_stream(model, ids)[block[-1] + 1].float() for ids in batches]
    student = remove_layers(model, block[1:])
    layers = decoder_layers(student)
    start = block[0]
    replacement = layers[start]
    student.requires_grad_(False)
    replacement.requires_grad_(True)
    optimizer = torch.optim.Adam(replacement.parameters(), lr=lr)
    outputs: list[torch.Tensor] = []
    handle = replacement.register_forward_hook(lambda _m, _a, out: outputs.append(out[0] if isinstance(out, tuple) else out))  # fmt: skip
    kept = student.model.layers
    student.model.layers = nn.ModuleList(layers[: start + 1])  # nothing after the replacement runs
    first = last = None
    try:
        for step in range(steps):
            i = step % len(batches)
            with precision.current().autocast():  # as Lightning's precision plugin trains
                student.model(input_ids=batches[i])
            loss = nn.functional.mse_loss(outputs.pop().float(), targets[i])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            first = loss.item() if first is None else first
            last = loss.item()
    finally:
        handle.remove()
        student.model.layers = kept
        student.requires_grad_(True)
    log.info("Streamline: layer %d trained to stand in for layers %s (MSE %.4g -> %.4g in %d steps)", start, block, first, last, steps)  # fmt: skip
    return student.train()
