"""Held-out perplexity: mean next-token NLL over non-overlapping blocks of a text."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from distillab.data.packing import bos_token_id, pack, tokenize_documents
from distillab.precision import float32_math


@torch.no_grad()
def perplexity(
    model,
    tokenizer,
    documents: list[str],
    block_size: int = 512,
    max_tokens: int | None = None,
    batch_size: int = 4,
) -> dict[str, float]:
    """``{"ppl", "nll", "tokens"}`` of ``model`` on ``documents`` packed into ``block_size`` blocks.

    Non-overlapping blocks (no sliding window): cheaper, slightly pessimistic, and identical for
    teacher and student, which is what retention needs. Blocks start with BOS where the tokenizer
    adds one (:func:`~distillab.data.packing.pack`); BOS is never a predicted token. Runs in the
    caller's precision (``evaluate_suite`` puts it under the run's autocast); the NLL itself is
    computed from float32 logits.
    """
    blocks = pack(
        tokenize_documents(tokenizer, documents, desc="tokenizing ppl text"),
        tokenizer.eos_token_id,
        block_size,
        bos_token_id(tokenizer),
    )
    if max_tokens:
        blocks = blocks[: max(1, int(max_tokens) // block_size)]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total_nll, total_tokens = 0.0, 0
    for start in tqdm(range(0, len(blocks), batch_size), desc="perplexity", leave=False):
        ids = blocks[start : start + batch_size].to(device)
        logits = model(input_ids=ids).logits[:, :-1]
        with float32_math(logits):
            nll = F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten(), reduction="sum")
        total_nll += float(nll)
        total_tokens += ids[:, 1:].numel()
    model.train(was_training)
    mean = total_nll / max(total_tokens, 1)
    return {"ppl": math.exp(mean), "nll": mean, "tokens": float(total_tokens)}
