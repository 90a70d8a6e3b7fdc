"""Exact resume: a training DataLoader that Lightning checkpoints, so a run restarted from
``last.ckpt`` sees exactly the batches an uninterrupted run would have seen.

The shuffle order of epoch ``e`` depends only on ``(seed, e)``, never on how many times the
process started. The loader counts the batches handed to training steps; Lightning stores that
count with each checkpoint (``state_dict`` / ``load_state_dict``: its ``_Stateful`` protocol) and
the resumed loader skips them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler


class EpochSeededSampler(Sampler[int]):
    """A permutation per epoch from ``seed`` and the epoch number; can start part-way into an epoch.

    Under DDP each rank takes every ``world_size``-th index of the same permutation (the tail that
    does not divide evenly is dropped so every rank runs the same number of steps), so the trainer
    runs with ``use_distributed_sampler: false``.
    """

    def __init__(self, size: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.size, self.seed, self.rank, self.world_size = size, seed, rank, world_size
        self.epoch, self.skip = 0, 0
        self.epoch_offset = 0  # > 0 when a run starts later in the stream (see ResumableDataLoader.start_at)

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this at every epoch start
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch_offset + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        mine = (
            order[: len(self)]
            if self.world_size == 1
            else order[: len(self) * self.world_size][self.rank :: self.world_size]
        )
        skip, self.skip = self.skip, 0
        yield from mine[skip:]

    def __len__(self) -> int:
        return self.size // self.world_size


class ResumableDataLoader(DataLoader):
    """A DataLoader over an :class:`EpochSeededSampler` whose position Lightning checkpoints.

    The count saved is the batches handed out in the current epoch. Lightning does not fetch ahead
    for loaders with a length (this one has), so that equals the batches consumed by training
    steps when ``ModelCheckpoint`` saves at the end of a step; the resume test checks it.
    """

    def __init__(
        self, dataset, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1, **kwargs: Any
    ):
        self.epoch_sampler = EpochSeededSampler(len(dataset), seed, rank, world_size)
        super().__init__(dataset, batch_size=batch_size, sampler=self.epoch_sampler, **kwargs)
        self._fetched = 0

    def __iter__(self):
        self._fetched = self.epoch_sampler.skip // int(self.batch_size)  # > 0 only when resuming
        for batch in super().__iter__():
            self._fetched += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch_sampler.epoch, "batches": self._fetched}

    def start_at(self, batch: int) -> None:
        """Begin at batch ``batch`` of the stream (epoch after epoch) rather than at its start.

        Iterative layer removal heals in phases; each phase continues where the previous one
        stopped, so the phases together read what one uninterrupted healing run would read.
        """
        per_epoch = len(self)
        self.epoch_sampler.epoch_offset = batch // per_epoch
        self.epoch_sampler.skip = batch % per_epoch * int(self.batch_size)

    def load_state_dict(self, state: dict[str, int]) -> None:
        batches = int(state["batches"])
        if batches >= len(self):
            batches = 0  # saved at the end of an epoch: Lightning starts the next one (and sets its epoch)
        self.epoch_sampler.epoch = int(state["epoch"])
        self.epoch_sampler.skip = batches * int(self.batch_size)
        self._fetched = batches
