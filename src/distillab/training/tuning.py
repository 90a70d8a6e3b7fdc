"""Which of the student's parameters train. Without ``tuning`` every parameter does (full training);
each ``conf/tuning/*.yaml`` names one of these classes, whose ``applied(student)`` is a context the
fit runs in, leaving a plain model (the usual parameter names, every parameter trainable) afterwards,
so export, evaluation, quantization and GGUF see no difference.

- :class:`LoRA`: low-rank adapters (peft's LoRA) on the named linear layers; the base weights stay
  frozen, and the adapters are merged into them when training ends (LLM-Pruner's and Gromov et al.'s
  healing; TRL and torchtune distil into adapters the same way).
- :class:`LastLayers`: only the last ``num_layers`` decoder layers, the final norm and the head train
  (the baseline of "Reassessing Layer Pruning", arXiv 2411.15558: drop the last layers, tune the head
  and the last few).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from distillab.errors import DistillabError
from distillab.models.surgery import decoder_layers

LLAMA_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@contextlib.contextmanager
def _kept_trainable_flags(model: nn.Module) -> Iterator[None]:
    """Whatever happens inside, every parameter leaves with the ``requires_grad`` it came with."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        yield
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


@dataclass(frozen=True)
class LoRA:
    """``tuning=lora``: ``W + (alpha / rank) · B A`` on ``target_modules``, only ``A`` and ``B`` train."""

    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: list(LLAMA_LINEARS))

    def describe(self) -> str:
        return f"LoRA (rank {self.rank}, alpha {self.alpha:g}, on {', '.join(self.target_modules)}; merged at the end)"

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """Inside, ``model`` carries the adapters (base weights frozen); afterwards they are merged
        into its weights and the model is plain again (the same object)."""
        from peft import LoraConfig, LoraModel  # imported here: only LoRA runs pay for peft's import

        names = {
            name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, nn.Linear)
        }
        missing = sorted(set(self.target_modules) - names)
        if missing:
            raise DistillabError(
                f"tuning.target_modules: {missing} are not linear layers of this model; valid: {sorted(names)}"
            )
        config = LoraConfig(
            r=int(self.rank), lora_alpha=float(self.alpha), lora_dropout=float(self.dropout),
            target_modules=list(self.target_modules),
        )  # fmt: skip
        with _kept_trainable_flags(model):
            adapters = LoraModel(model, config, "default")  # in place: `model` is adapters.model
            try:
                yield model
            finally:
                adapters.merge_and_unload()  # W += (alpha / rank) B A; the LoRA modules are gone


@dataclass(frozen=True)
class LastLayers:
    """``tuning=last_layers``: the last ``num_layers`` decoder layers, the final norm and the head
    train; everything before is frozen. A tied head is the input embedding, so it trains too."""

    num_layers: int = 3
    head: bool = True

    def describe(self) -> str:
        return f"the last {self.num_layers} layers{', the final norm and the head' if self.head else ''}"

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        layers = decoder_layers(model)
        if not 1 <= int(self.num_layers) <= len(layers):
            raise DistillabError(
                f"tuning.num_layers: {self.num_layers} is not valid for a {len(layers)}-layer model; "
                f"valid: 1..{len(layers)}"
            )
        with _kept_trainable_flags(model):
            model.requires_grad_(False)
            for layer in layers[-int(self.num_layers) :]:
                layer.requires_grad_(True)
            if self.head:
                model.get_output_embeddings().requires_grad_(True)
                model.model.norm.requires_grad_(True)
            yield model


def from_config(node: Any, quantize_aware: Any = None, key: str = "tuning") -> LoRA | LastLayers | None:
    """``tuning`` of a distill config (``heal.tuning`` in prune), built and checked; None: full training."""
    if not node:
        return None
    from distillab.config import build_target

    tuning = build_target(node, key, "a tuning kind", "applied", f"{key}=lora | last_layers | null")
    if isinstance(tuning, LoRA) and quantize_aware is not None:
        raise DistillabError(
            f"{key}: lora together with quantize_aware is not supported (the adapters, not the merged "
            "weights, would be fake-quantized); valid with quantize_aware: last_layers | null (all parameters)"
        )
    return tuning
