"""FSDP2 (``torch.distributed.fsdp.fully_shard``) for the student *and* the frozen teacher, under
Lightning's ``ModelParallelStrategy`` (``trainer=fsdp``).

Each decoder layer is its own shard unit, then the root (embeddings, tied head, final norm). The
teacher is sharded the same way so a teacher larger than one device fits; it has no gradients and
no optimizer state, and resharding after its forward frees the gathered weights at once.
After training, :func:`unsharded_copy` gathers the full student for evaluation and export.
"""

from __future__ import annotations

import copy

import torch
from torch.distributed.tensor import DTensor
from transformers import PreTrainedModel

from distillab.models.surgery import decoder_layers


def shard_model(model: PreTrainedModel, mesh) -> None:
    from torch.distributed.fsdp import fully_shard

    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)


def is_sharded(model: torch.nn.Module) -> bool:
    return any(isinstance(p, DTensor) for p in model.parameters())


def unsharded_copy(model: PreTrainedModel) -> PreTrainedModel | None:
    """Gather the full weights (a collective: every rank must call it); rank 0 gets a plain model."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if dist.get_rank() != 0:
        return None
    config = copy.deepcopy(model.config)
    plain = type(model)(config).to(torch.float32)
    result = plain.load_state_dict(state, strict=False)  # a tied head is one tensor in the state dict
    unexpected = set(result.unexpected_keys)
    missing = set(result.missing_keys) - ({"lm_head.weight"} if config.tie_word_embeddings else set())
    if missing or unexpected:
        raise RuntimeError(
            f"gathering the FSDP student: missing {sorted(missing)}, unexpected {sorted(unexpected)}"
        )
    plain.tie_weights()
    return plain.eval()
