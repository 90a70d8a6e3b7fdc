"""Held-out perplexity: mean next-token NLL over non-overlapping blocks of a text."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from distillab.data.packing import bos_token_id, pack, tokenize_documents
from distillab.precision import float32_math


def perplexity_blocks(
    tokenizer, documents: list[str], block_size: int = 512, max_tokens: int | None = None
) -> torch.Tensor:
    """The ``(blocks, block_size)`` token ids :func:`block_nll` scores (every runtime scores these)."""
    blocks = pack(
        tokenize_documents(tokenizer, documents, desc="tokenizing ppl text"),
        tokenizer.eos_token_id,
        block_size,
        bos_token_id(tokenizer),
    )
    return blocks[: max(1, int(max_tokens) // block_size)] if max_tokens else blocks


@torch.no_grad()
def block_nll(
    model,
    tokenizer,
    documents: list[str],
    block_size: int = 512,
    max_tokens: int | None = None,
    batch_size: int = 4,
) -> tuple[list[float], list[int]]:
    """Summed next-token NLL and predicted-token count of each block of ``documents``.

    Non-overlapping blocks (no sliding window): cheaper, slightly pessimistic, and identical for
    teacher and student, which is what retention needs. Blocks start with BOS where the tokenizer
    adds one (:func:`~distillab.data.packing.pack`); BOS is never a predicted token. Runs in the
    caller's precision (``evaluate_suite`` puts it under the run's autocast); the NLL itself is
    computed from float32 logits. The blocks are the items of :mod:`~distillab.evaluation.items`.
    """
    blocks = perplexity_blocks(tokenizer, documents, block_size, max_tokens)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    nll_sums: list[float] = []
    for start in tqdm(range(0, len(blocks), batch_size), desc="perplexity", leave=False):
        ids = blocks[start : start + batch_size].to(device)
        logits = model(input_ids=ids).logits
        # One block at a time in float32: a (batch x block x vocab) float32 copy is 4.3 GB at
        # 8 x 512 x 262k (Gemma-3) and its log-softmax as much again -- more than a 24 GB machine has.
        with float32_math(logits):
            for row, block in enumerate(ids):
                nll = F.cross_entropy(logits[row, :-1].float(), block[1:], reduction="none")
                nll_sums.append(nll.double().sum().item())
        del logits  # before the next forward, not after it
    model.train(was_training)
    return nll_sums, [blocks.shape[1] - 1] * len(nll_sums)


def perplexity(model, tokenizer, documents: list[str], **kwargs) -> dict[str, float]:
    """``{"ppl", "nll", "tokens"}`` of ``model`` on ``documents`` (the blocks of :func:`block_nll`)."""
    return perplexity_from_blocks(*block_nll(model, tokenizer, documents, **kwargs))


def perplexity_from_blocks(nll_sums: list[float], tokens: list[int]) -> dict[str, float]:
    total_tokens = sum(tokens)
    mean = sum(nll_sums) / max(total_tokens, 1)
    return {"ppl": math.exp(mean), "nll": mean, "tokens": float(total_tokens)}
