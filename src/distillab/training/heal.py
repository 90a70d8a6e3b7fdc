"""Heal a cut model against the original: the DistillModule with a ``heal`` config block.

``heal`` holds its own objective (default ``ild``: KL + hidden alignment with the ``original``
layer map, so each kept layer is pulled toward the teacher layer it was copied from), data,
trainer, optimizer and scheduler, composed from the same config groups as ``distillab-distill``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from distillab.config import to_plain
from distillab.errors import DistillabError
from distillab.files import keep_earlier_csv
from distillab.models.surgery import decoder_layers, teacher_layer_indices
from distillab.objectives.objective import Objective, build_objective
from distillab.quantization.fake_quant import QuantizeAware
from distillab.training.fit import fit, training_cost, training_parts

log = logging.getLogger(__name__)


def layers_next_to_gaps(teacher_layers: Sequence[int], num_teacher_layers: int) -> list[int]:
    """Student layers adjacent to a removed teacher layer (the ones healing should move most)."""
    near = set()
    padded = [-1, *teacher_layers, num_teacher_layers]
    for i in range(len(teacher_layers)):
        before, here, after = padded[i], padded[i + 1], padded[i + 2]
        if here - before > 1 or after - here > 1:
            near.add(i)
    return sorted(near)


def healing_objective(heal_cfg) -> Objective:
    """``heal.objective``, built and checked (distillab-prune calls this before any compute)."""
    objective = build_objective(to_plain(heal_cfg.objective.terms))
    if objective.needs_cache or objective.cross_tokenizer:  # its teacher is the uncut model, one tokenizer
        raise DistillabError(
            "heal.objective: cached-teacher and cross-tokenizer terms are not supported for healing; use kd or ild"
        )
    return objective


def periodic_checkpoint(work_dir: Path, every: int) -> ModelCheckpoint:
    """``last.ckpt`` in ``work_dir/checkpoints`` every ``every`` optimizer steps: an interrupted
    healing phase resumes there (``heal.checkpoint_every``)."""
    return ModelCheckpoint(
        dirpath=str(work_dir / "checkpoints"), save_last=True, save_top_k=0, every_n_train_steps=int(every)
    )


def heal(
    student: torch.nn.Module,
    teacher: torch.nn.Module,
    heal_cfg: Any,
    tokenizer,
    work_dir: Path,
    paths: Any,
    callbacks: Sequence[L.Callback] = (),
    start_batch: int = 0,
    compile: Any = "false",
    quantize_aware: QuantizeAware | None = None,
    tuning: Any = None,
) -> dict[str, float]:
    """Train ``student`` in place for ``heal.trainer.max_steps``; returns the final logged metrics
    with what the healing cost: ``train_tokens`` and ``train_seconds``.

    ``start_batch``: where in the training stream to begin (a later phase of iterative removal
    continues where the previous phase stopped instead of re-reading the same batches).
    ``quantize_aware``: train on the student's fake-quantized weights (quantization/fake_quant.py);
    ``tuning``: which of its parameters train (training/tuning.py; None: all).
    With ``heal.checkpoint_every``, ``work_dir/checkpoints/last.ckpt`` is saved every that many
    steps and a call that finds one resumes from it (weights, optimizer, data position, seconds).
    """
    objective = healing_objective(heal_cfg)
    trainable = None
    student.train().requires_grad_(True)  # a copy of the frozen original starts frozen, in eval mode
    if heal_cfg.get("only_layers_next_to_gaps"):
        trainable = layers_next_to_gaps(teacher_layer_indices(student), teacher.config.num_hidden_layers)
        student.requires_grad_(False)
        for i in trainable:
            decoder_layers(student)[i].requires_grad_(True)
        log.info("healing only the layers next to gaps: %s", trainable)
    module, datamodule = training_parts(heal_cfg, student, teacher, objective, tokenizer, paths, start_batch)
    logger = CSVLogger(str(work_dir), name="csv", version="")
    keep_earlier_csv(Path(logger.log_dir))  # a resumed heal keeps the log of the steps before
    every = heal_cfg.get("checkpoint_every")
    callbacks = [*callbacks, *([periodic_checkpoint(work_dir, every)] if every else [])]
    last = work_dir / "checkpoints" / "last.ckpt"
    resume = str(last) if every and last.is_file() else None
    if resume:
        log.info("resuming the healing from %s", last)
    try:
        trainer, seconds = fit(
            module, datamodule, heal_cfg.trainer, work_dir, [logger], callbacks, ckpt_path=resume,
            checkpointing=bool(every), compile=compile, quantize_aware=quantize_aware, tuning=tuning,
        )  # fmt: skip
    finally:
        if trainable is not None:
            student.requires_grad_(True)
    cost = training_cost(trainer, module, heal_cfg.data) | {"train_seconds": seconds}
    return {k: float(v) for k, v in trainer.callback_metrics.items()} | cost
