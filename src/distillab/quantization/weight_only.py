"""In-process post-training weight quantization with torchao (CPU): int8 per channel, int4 per group.

Only the decoder's linear layers are quantized. The embedding and a tied LM head stay in full
precision (quantizing the head would untie it from the embedding). On CPU, torchao keeps int4
weights unpacked in int8 storage, so a 4-bit model is *not* smaller on disk than an 8-bit one
here; report the bytes measured, and use GGUF (q4_0, Q4_K_M) for real 4-bit files.
"""

from __future__ import annotations

import io
import logging

import torch
from transformers import PreTrainedModel

from distillab.errors import DistillabError

log = logging.getLogger(__name__)

BITS = (8, 4)


def check_bits(bits: int, group_size: int) -> None:
    if bits not in BITS:
        raise DistillabError(f"quantize.bits: {bits} is not supported by the torchao backend; valid: 8, 4")
    if bits == 4 and (group_size <= 0 or group_size % 32):
        raise DistillabError(f"quantize.group_size: {group_size}; valid: a positive multiple of 32")


def _config(bits: int, group_size: int):
    try:
        from torchao.quantization import Int8WeightOnlyConfig, IntxWeightOnlyConfig
        from torchao.quantization.granularity import PerGroup
    except ImportError as err:
        raise DistillabError(
            f"quantize=torchao: torchao is not importable ({err}); pip install torchao"
        ) from None
    if bits == 8:
        return Int8WeightOnlyConfig()
    return IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(group_size))


def is_decoder_linear(module: torch.nn.Module, name: str) -> bool:
    return isinstance(module, torch.nn.Linear) and not name.endswith("lm_head")


def quantize_weights(model: PreTrainedModel, bits: int, group_size: int = 32) -> PreTrainedModel:
    """Quantize ``model``'s decoder linear weights in place and return it."""
    check_bits(bits, group_size)
    from torchao.quantization import quantize_

    for name, module in model.named_modules():
        if is_decoder_linear(module, name) and module.in_features % group_size and bits == 4:
            raise DistillabError(
                f"quantize.group_size: {group_size} does not divide {name}.in_features={module.in_features}"
            )
    quantize_(model, _config(bits, group_size), filter_fn=is_decoder_linear)
    return model


def state_dict_bytes(model: torch.nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())``: what the quantized weights occupy when saved."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()
