"""Calibration blocks for importance scores: the first N packed blocks of a configured corpus."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from distillab.data.datamodule import CorpusDataModule
from distillab.errors import DistillabError


def calibration_blocks(
    tokenizer,
    data_cfg: Mapping[str, Any],
    num_blocks: int,
    data_dir: str | None = None,
    cache_dir: str | None = None,
    key: str = "prune.calibration.num_blocks",
) -> torch.Tensor:
    """``(num_blocks, block_size)`` token ids from the training split of ``data_cfg``; ``key`` is the
    config key that set ``num_blocks`` (for errors)."""
    if num_blocks < 1:
        raise DistillabError(f"{key}: must be >= 1, got {num_blocks}")
    keys = ("block_size", "val_fraction", "max_documents", "seed")
    module = CorpusDataModule(
        tokenizer,
        data_cfg["source"],
        data_dir=data_dir,
        cache_dir=cache_dir,
        name=data_cfg.get("name", "corpus"),
        **{k: data_cfg[k] for k in keys if data_cfg.get(k) is not None},
    )
    module.setup()
    blocks = module.train_blocks
    if blocks.shape[0] < num_blocks:
        raise DistillabError(f"{key}: {num_blocks} requested, the corpus has {blocks.shape[0]} blocks")
    return blocks[:num_blocks]


def batches(blocks: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    return [blocks[i : i + batch_size] for i in range(0, blocks.shape[0], batch_size)]
