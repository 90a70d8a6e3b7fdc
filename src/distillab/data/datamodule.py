"""CorpusDataModule: documents -> packed blocks -> train/val DataLoaders."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from distillab.data.corpus import read_documents
from distillab.data.packing import packed_blocks, split_documents
from distillab.data.paths import resolve_data_dir
from distillab.data.resumable import ResumableDataLoader
from distillab.data.teacher_cache import TopKCacheDataset, collate_cached
from distillab.errors import DistillabError


def collate_blocks(rows: list[tuple[torch.Tensor]]) -> dict[str, torch.Tensor]:
    ids = torch.stack([r[0] for r in rows])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


class CorpusDataModule(L.LightningDataModule):
    """Packs a corpus for causal-LM training; deterministic given ``seed``.

    ``max_documents`` caps how many documents are read (after a seeded shuffle), ``max_train_blocks``
    / ``max_val_blocks`` cap the blocks used: short budgets without a separate corpus file.
    """

    def __init__(
        self,
        tokenizer,
        source: Mapping[str, Any],
        data_dir: str | None = None,
        cache_dir: str | None = None,
        block_size: int = 256,
        batch_size: int = 4,
        val_fraction: float = 0.05,
        max_documents: int | None = None,
        max_train_blocks: int | None = None,
        max_val_blocks: int | None = None,
        seed: int = 0,
        num_workers: int = 0,
        name: str = "corpus",
        start_batch: int = 0,
    ):
        super().__init__()
        self.tokenizer, self.source, self.name = tokenizer, dict(source), name
        self.data_dir = data_dir
        self.cache_dir = Path(cache_dir) / "tokenized" if cache_dir else None
        self.block_size, self.batch_size, self.num_workers = int(block_size), int(batch_size), num_workers
        self.val_fraction, self.seed = val_fraction, seed
        self.start_batch = int(start_batch)  # training begins this many batches into the stream
        self.max_documents, self.max_train_blocks, self.max_val_blocks = (
            max_documents,
            max_train_blocks,
            max_val_blocks,
        )
        if self.batch_size < 1:
            raise DistillabError(f"data.batch_size: must be >= 1, got {batch_size}")
        self.train_blocks: torch.Tensor | None = None
        self.val_blocks: torch.Tensor | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_blocks is not None:
            return
        data_dir = (
            resolve_data_dir(self.data_dir) if self.source.get("format", "jsonl") != "hub" else Path(".")
        )
        docs = read_documents(self.source, data_dir)
        train_docs, val_docs = split_documents(docs, self.val_fraction, self.seed)
        if self.max_documents:
            train_docs = train_docs[: int(self.max_documents)]
        self.train_blocks = packed_blocks(
            self.tokenizer, train_docs, self.block_size, self.cache_dir, f"{self.name}-train"
        )
        self.val_blocks = packed_blocks(
            self.tokenizer, val_docs, self.block_size, self.cache_dir, f"{self.name}-val"
        )
        if self.max_train_blocks:
            self.train_blocks = self.train_blocks[: int(self.max_train_blocks)]
        if self.max_val_blocks:
            self.val_blocks = self.val_blocks[: int(self.max_val_blocks)]
        if len(self.train_blocks) == 0:
            raise DistillabError(
                f"data: the corpus gives no training block of {self.block_size} tokens; use more documents "
                "or a smaller data.block_size"
            )

    def use_teacher_cache(self, directory: Path) -> None:
        """Train on the cached blocks with their teacher top-k distributions (see teacher_cache.py)."""
        self.train_dataset, self.train_collate = TopKCacheDataset(directory), collate_cached

    def train_dataloader(self) -> DataLoader:
        # Resumable: the shuffle depends only on (seed, epoch), the position is checkpointed.
        dataset = getattr(self, "train_dataset", None) or TensorDataset(self.train_blocks)
        trainer = getattr(self, "trainer", None)
        loader = ResumableDataLoader(
            dataset,
            batch_size=self.batch_size,
            seed=self.seed,
            rank=trainer.global_rank if trainer is not None else 0,
            world_size=trainer.world_size if trainer is not None else 1,
            collate_fn=getattr(self, "train_collate", collate_blocks),
            num_workers=self.num_workers,
            drop_last=len(self.train_blocks) >= self.batch_size,
        )
        if self.start_batch:
            loader.start_at(self.start_batch)
        return loader

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            TensorDataset(self.val_blocks), batch_size=self.batch_size, collate_fn=collate_blocks
        )
