"""Model surgery: remove whole decoder layers and leave a consistent, reloadable HF model.

After :func:`remove_layers`, ``config.num_hidden_layers``, every per-layer config list (such as
``layer_types``) and every attention module's ``layer_idx`` agree with the new depth, and
``config.distillab_teacher_layers`` records which original layer each kept layer was, so a
healed student knows its teacher counterpart (composes across repeated removals).
"""

from __future__ import annotations

import copy
import logging

from torch import nn
from transformers import PreTrainedModel

from distillab.errors import DistillabError

log = logging.getLogger(__name__)

TEACHER_LAYERS_KEY = "distillab_teacher_layers"
# the same record as distillab's own GGUF metadata key (llama.cpp ignores keys it does not know)
TEACHER_LAYERS_GGUF_KEY = "distillab.teacher_layers"
# Config lists that may happen to have num_hidden_layers entries but are not per-layer.
_NOT_PER_LAYER = {"architectures", "bad_words_ids", "suppress_tokens", "begin_suppress_tokens"}


def attention_head_dim(config) -> int:
    """Per-head width: ``config.head_dim`` when set (a head-pruned model keeps it while heads shrink)."""
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def decoder_layers(model: PreTrainedModel) -> nn.ModuleList:
    """The ModuleList of decoder blocks (Llama/Qwen2/Mistral/Gemma-style ``model.model.layers``)."""
    base = getattr(model, "model", None)
    layers = getattr(base, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise DistillabError(
            f"surgery: {type(model).__name__} has no model.layers; supported: decoder-only models with "
            "a model.model.layers ModuleList (Llama, Qwen2, Mistral, Gemma, ...)"
        )
    return layers


def teacher_layer_indices(model: PreTrainedModel) -> list[int]:
    """Original teacher index of each layer (identity for a model that was never cut)."""
    recorded = getattr(model.config, TEACHER_LAYERS_KEY, None)
    return list(recorded) if recorded is not None else list(range(model.config.num_hidden_layers))


def evenly_spaced(num_layers: int, num_remove: int) -> list[int]:
    """``num_remove`` layer indices spread evenly over the interior; first and last layer kept.

    Spacing (L-1)/(n+1) >= 1 keeps the rounded indices distinct and inside 1..L-2.
    30 layers, remove 6 -> [4, 8, 12, 17, 21, 25].
    """
    if not 0 <= num_remove <= num_layers - 2:
        raise DistillabError(
            f"student.num_remove: {num_remove} is outside 0..{num_layers - 2} for a {num_layers}-layer "
            "model (the first and last layer are kept)"
        )
    return [round((i + 1) * (num_layers - 1) / (num_remove + 1)) for i in range(num_remove)]


def validate_removal(num_layers: int, remove: list[int], key: str = "student.remove") -> list[int]:
    remove = sorted(int(i) for i in remove)
    bad = [i for i in remove if not 0 <= i < num_layers]
    if bad:
        raise DistillabError(
            f"{key}: layer {bad[0]} out of range for a {num_layers}-layer model; valid: 0..{num_layers - 1}"
        )
    if len(set(remove)) != len(remove):
        raise DistillabError(f"{key}: duplicate layer indices in {remove}")
    if len(remove) >= num_layers:
        raise DistillabError(f"{key}: cannot remove all {num_layers} layers; keep at least one")
    return remove


def remove_layers(model: PreTrainedModel, remove: list[int], inplace: bool = False) -> PreTrainedModel:
    """Return ``model`` without the decoder layers at indices ``remove`` (a copy unless ``inplace``)."""
    num_layers = model.config.num_hidden_layers
    remove = validate_removal(num_layers, remove)
    if not inplace:
        model = copy.deepcopy(model)
    layers = decoder_layers(model)
    keep = [i for i in range(num_layers) if i not in set(remove)]
    origin = teacher_layer_indices(model)
    model.model.layers = nn.ModuleList(layers[i] for i in keep)
    for new_idx, layer in enumerate(model.model.layers):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_idx  # KV-cache slot; must match the new position
    _slice_per_layer_config(model.config, num_layers, keep)
    setattr(model.config, TEACHER_LAYERS_KEY, [origin[i] for i in keep])
    log.info("removed layers %s: %d -> %d layers", remove, num_layers, len(keep))
    return model


def _slice_per_layer_config(config, num_layers: int, keep: list[int]) -> None:
    for key, value in list(config.to_dict().items()):
        if key in _NOT_PER_LAYER or key == TEACHER_LAYERS_KEY:
            continue
        if isinstance(value, (list, tuple)) and len(value) == num_layers:
            setattr(config, key, [value[i] for i in keep])
    if isinstance(getattr(config, "max_window_layers", None), int):
        # Qwen2-style: layers with index >= max_window_layers use sliding windows.
        config.max_window_layers = sum(1 for i in keep if i < config.max_window_layers)
    config.num_hidden_layers = len(keep)
