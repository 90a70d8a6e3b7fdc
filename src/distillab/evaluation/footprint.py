"""Size and speed of a model as deployed: parameters, bytes on disk, greedy-decode tokens/s."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from distillab.precision import in_run_precision

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")


def bytes_on_disk(path: str | Path) -> int:
    """Weight bytes of a file, or of the weight files in an HF folder (configs/tokenizer excluded)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    weights = [f for f in path.iterdir() if f.suffix in WEIGHT_SUFFIXES]
    if any(f.suffix == ".safetensors" for f in weights):  # what from_pretrained loads: not also a .bin copy
        weights = [f for f in weights if f.suffix == ".safetensors"]
    return sum(f.stat().st_size for f in weights)


@torch.no_grad()
@in_run_precision
def decode_tokens_per_second(
    model, prompt_ids: torch.Tensor, new_tokens: int = 32, repeats: int = 3
) -> float:
    """Greedy decode with KV cache, batch 1; median of ``repeats`` after one warm-up."""
    model.eval()
    prompt = prompt_ids[:1].to(model.device)

    def once() -> float:
        start = time.perf_counter()
        model.generate(
            prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0
        )
        return new_tokens / (time.perf_counter() - start)

    once()
    return statistics.median(once() for _ in range(repeats))
