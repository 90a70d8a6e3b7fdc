"""Whole-layer importance: higher = more important; prune the lowest.

Activation scores come from **one** calibration pass that records the residual stream around
every decoder layer (forward hooks, raw — transformers' ``hidden_states[-1]`` is after the final
norm, which would distort the last layer's score):

- ``block_influence`` (ShortGPT, arXiv 2403.03853): 1 − cos(layer input, layer output), mean over tokens.
- ``angular`` (Gromov et al., arXiv 2403.17887): arccos(cos(h_ℓ, h_ℓ+n)) / π on the last token, for
  the block of n layers starting at ℓ (n = ``angular_block``; 1 scores single layers).
- ``lens_kl``: KL(lens(output) ‖ lens(input)), how much the logit-lens distribution moves across the
  layer (final norm + LM head, as DistillLens); on every ``lens_stride``-th token to bound its cost.

Removal scores remove one layer at a time and measure the damage (the ILD paper's criterion,
arXiv 2511.05085): ``ppl_drop`` (calibration perplexity increase) and ``benchmark_drop`` (drop of
an lm-eval metric on a configurable subset). ``random`` gives a seeded random order (a baseline).

Every score is a function ``(model, ScoreInputs) -> per-layer importance`` named in
``pruning/scores.py``'s ``SCORES``, which says where each is valid: adding a score is that function
and its line there. Scores are values, not
``_target_`` groups, because researchers sweep them (``prune.score=block_influence,angular,random``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from distillab.errors import DistillabError
from distillab.models.surgery import decoder_layers, remove_layers
from distillab.objectives.lens import lens_head
from distillab.precision import in_run_precision

# Computed together from one calibration pass (activation_layer_scores): a student cut reads these.
ACTIVATION_SCORES = ("block_influence", "angular", "lens_kl")


@dataclass(frozen=True)
class ScoreInputs:
    """What a layer score may read besides the model; each score reads only its own fields."""

    calibration: Sequence[torch.Tensor] = ()
    seed: int = 0  # random: a seeded order (distillab-prune seeds each removal step apart)
    angular_block: int = 1  # angular: the block length n (contiguous removal scores blocks)
    lens_stride: int = 32  # lens_kl: every n-th token (each layer costs an LM-head projection)
    ppl_batches: int = 2  # ppl_drop: calibration batches measured per removed layer
    benchmark: Callable[[nn.Module], float] | None = None  # benchmark_drop: the metric, higher is better


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity over the last dim, in float32. ``(..., H) x2 -> (...)``."""
    return F.cosine_similarity(a.float(), b.float(), dim=-1, eps=1e-8)


def block_influence(h_in: torch.Tensor, h_out: torch.Tensor) -> torch.Tensor:
    """Per token 1 − cos(input, output) of a layer. ``(B, T, H) x2 -> (B, T)``."""
    return 1.0 - cosine(h_in, h_out)


def angular_distance(h_a: torch.Tensor, h_b: torch.Tensor) -> torch.Tensor:
    """arccos(cos(a, b)) / π in [0, 1]. ``(..., H) x2 -> (...)``.

    In float64: arccos is ill-conditioned near cos = 1, where float32 rounding alone gives ~1e-4.
    """
    cos = F.cosine_similarity(h_a.double(), h_b.double(), dim=-1, eps=1e-12)
    return (torch.arccos(cos.clamp(-1.0, 1.0)) / math.pi).float()


def lens_log_probs(hidden: torch.Tensor, head: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    return F.log_softmax(head(hidden).float(), dim=-1)


# -- one calibration pass ---------------------------------------------------------------------------


def residual_stream(model: nn.Module, input_ids: torch.Tensor) -> list[torch.Tensor]:
    """``[input of layer 0, output of layer 0, ..., output of layer L-1]``, raw (no final norm)."""
    layers = decoder_layers(model)
    stream: list[torch.Tensor] = []

    def take_input(_module, args, kwargs):
        stream.append(args[0] if args else kwargs["hidden_states"])

    def take_output(_module, _args, output):
        stream.append(output[0] if isinstance(output, tuple) else output)

    handles = [layers[0].register_forward_pre_hook(take_input, with_kwargs=True)]
    handles += [layer.register_forward_hook(take_output) for layer in layers]
    try:
        model(input_ids=input_ids)
    finally:
        for handle in handles:
            handle.remove()
    return stream


@torch.no_grad()
@in_run_precision
def activation_layer_scores(
    model: nn.Module,
    batches: Sequence[torch.Tensor],
    scores: Sequence[str] = ACTIVATION_SCORES,
    angular_block: int = 1,
    lens_stride: int = 32,
    lens_apply_norm: bool = True,
) -> dict[str, list[float]]:
    """Every requested activation score for every layer, from one forward pass per batch.

    ``angular`` with ``angular_block = n`` has L − n + 1 entries (one per block start).
    """
    num_layers = len(decoder_layers(model))
    if not 1 <= angular_block <= num_layers:
        raise DistillabError(
            f"prune.layers.num_remove: a contiguous angular block of {angular_block} layers must be in "
            f"1..{num_layers}"
        )
    head = lens_head(model, lens_apply_norm)
    sums = {name: torch.zeros(num_layers, dtype=torch.float64) for name in scores}
    if "angular" in sums:
        sums["angular"] = torch.zeros(num_layers - angular_block + 1, dtype=torch.float64)
    counts = dict.fromkeys(sums, 0)
    model.eval()
    for ids in batches:
        stream = residual_stream(model, ids)
        if "block_influence" in sums:
            sums["block_influence"] += torch.stack(
                [block_influence(stream[i], stream[i + 1]).sum() for i in range(num_layers)]
            ).double()
            counts["block_influence"] += ids.numel()
        if "angular" in sums:
            last = [h[:, -1] for h in stream]
            sums["angular"] += torch.stack(
                [
                    angular_distance(last[i], last[i + angular_block]).sum()
                    for i in range(len(sums["angular"]))
                ]
            ).double()
            counts["angular"] += ids.shape[0]
        if "lens_kl" in sums:
            before = lens_log_probs(stream[0][:, ::lens_stride], head)
            for i in range(num_layers):
                after = lens_log_probs(stream[i + 1][:, ::lens_stride], head)
                sums["lens_kl"][i] += (after.exp() * (after - before)).sum().double()
                before = after
            counts["lens_kl"] += before.shape[0] * before.shape[1]
    return {name: (sums[name] / counts[name]).tolist() for name in sums}


# -- removal scores: one layer out at a time ---------------------------------------------------------


def removal_drop_scores(
    model: nn.Module, metric: Callable[[nn.Module], float], higher_is_better: bool
) -> tuple[list[float], float]:
    """Per layer, how much ``metric`` worsens when that layer alone is removed; and the base value.

    The drop is positive when removing the layer hurts, so it reads as importance.
    """
    base = metric(model)
    drops = []
    for i in range(len(decoder_layers(model))):
        value = metric(remove_layers(model, [i]))
        drops.append(base - value if higher_is_better else value - base)
    return drops, base


@torch.no_grad()
@in_run_precision
def calibration_perplexity(model: nn.Module, batches: Sequence[torch.Tensor]) -> float:
    """Token-weighted perplexity of ``model`` on the calibration batches (next-token, no padding)."""
    model.eval()
    nll, tokens = 0.0, 0
    for ids in batches:
        logits = model(input_ids=ids).logits[:, :-1]
        nll += F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1), reduction="sum"
        ).item()
        tokens += ids[:, 1:].numel()
    return math.exp(nll / tokens)


def random_scores(num_layers: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.random() for _ in range(num_layers)]


# -- choosing what to remove --------------------------------------------------------------------------


def least_important(
    scores: Sequence[float], k: int, protect: Sequence[int] = (), contiguous_block: bool = False
) -> list[int]:
    """Indices of the ``k`` lowest-scoring layers (never those in ``protect``).

    ``contiguous_block``: ``scores`` are per block start (angular with n = k); remove the best
    block that contains no protected layer.
    """
    protected = set(protect)
    if contiguous_block:
        starts = [i for i in range(len(scores)) if protected.isdisjoint(range(i, i + k))]
        if not starts:
            raise DistillabError(
                f"prune.layers.protect: {sorted(protected)} leaves no block of {k} contiguous layers to remove; "
                "protect fewer layers or set prune.layers.contiguous=false"
            )
        start = min(starts, key=lambda i: (scores[i], i))
        return list(range(start, start + k))
    candidates = [i for i in range(len(scores)) if i not in protected]
    if k > len(candidates):
        raise DistillabError(
            f"prune.layers.num_remove: {k} layers requested, only {len(candidates)} can be removed "
            f"(prune.layers.protect: {list(protect)})"
        )
    return sorted(sorted(candidates, key=lambda i: (scores[i], i))[:k])


# -- the scores by name ---------------------------------------------------------------------------------


def activation_score(name: str) -> Callable[[nn.Module, ScoreInputs], list[float]]:
    def score(model: nn.Module, x: ScoreInputs) -> list[float]:
        return activation_layer_scores(
            model, x.calibration, [name], angular_block=x.angular_block, lens_stride=x.lens_stride
        )[name]

    return score


def ppl_drop(model: nn.Module, x: ScoreInputs) -> list[float]:
    subset = x.calibration[: x.ppl_batches]
    return removal_drop_scores(model, lambda m: calibration_perplexity(m, subset), higher_is_better=False)[0]


def benchmark_drop(model: nn.Module, x: ScoreInputs) -> list[float]:
    if x.benchmark is None:
        raise DistillabError("prune.score: benchmark_drop needs a benchmark; it is scored by distillab-prune")
    return removal_drop_scores(model, x.benchmark, higher_is_better=True)[0]


def random_order(model: nn.Module, x: ScoreInputs) -> list[float]:
    return random_scores(len(decoder_layers(model)), x.seed)


def depth_order(model: nn.Module, x: ScoreInputs) -> list[float]:
    """``last``: the deeper a layer, the lower its score, so a cut of N removes the last N layers
    (those before the final norm): the baseline of Reassessing Layer Pruning (arXiv 2411.15558)."""
    num_layers = len(decoder_layers(model))
    return [float(num_layers - i) for i in range(num_layers)]
