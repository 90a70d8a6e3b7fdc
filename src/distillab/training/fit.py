"""One way to train a student against a teacher, used by ``distillab-distill`` and by healing
(``training/heal.py``): the data, the DistillModule with its optimizer and schedule, and a Lightning
Trainer that writes checkpoints atomically; plus the checks that make a resume safe.

A ``block`` is a config node with ``data``, ``optimizer``, ``scheduler`` and ``trainer``: the whole
``distill.yaml`` for a distillation, ``prune.yaml``'s ``heal`` for healing.
"""

from __future__ import annotations

import contextlib
import logging
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint, Timer

from distillab import cost
from distillab.compiling import check_mode, compiled_models, compiling
from distillab.config import to_plain
from distillab.data.corpus import read_documents
from distillab.data.datamodule import CorpusDataModule
from distillab.data.paths import resolve_data_dir
from distillab.errors import DistillabError
from distillab.objectives.objective import Objective
from distillab.quantization.fake_quant import QuantizeAware
from distillab.training.checkpoint_io import AtomicCheckpointIO
from distillab.training.distill_module import DistillModule
from distillab.training.tuning import trainable_parameters

log = logging.getLogger(__name__)


def attach_documents(objective: Objective, tokenizer, data_dir: str | None, limit: int = 256) -> None:
    """Read the corpus each term asks for (``Term.documents_wanted``: e.g. contrastive's prompts,
    relative to the data directory) and hand it over (here: objectives compute, they do not read files)."""
    for name, term in objective.weighted():
        try:
            source = term.documents_wanted()
        except DistillabError as err:
            raise DistillabError(f"objective.terms.{name}.{err}") from None
        if source is not None:
            term.attach_documents(tokenizer, read_documents(source, resolve_data_dir(data_dir))[:limit])


def training_parts(
    block,
    student,
    teacher,
    objective: Objective,
    tokenizer,
    paths,
    start_batch: int = 0,
    **module_options: Any,
) -> tuple[DistillModule, CorpusDataModule]:
    """The data (set up) and the module; the teacher is held only if a term needs it."""
    datamodule = CorpusDataModule(
        tokenizer,
        **to_plain(block.data),
        data_dir=paths.data_dir,
        cache_dir=paths.cache_dir,
        start_batch=start_batch,
    )
    datamodule.setup("fit")
    attach_documents(objective, tokenizer, paths.data_dir)
    module = DistillModule(
        student,
        objective,
        teacher if objective.needs_teacher else None,
        optimizer=instantiate(block.optimizer),
        scheduler=instantiate(block.scheduler) if block.get("scheduler") else None,
        **module_options,
    )
    return module, datamodule


def fit(
    module: DistillModule,
    datamodule: CorpusDataModule,
    trainer_cfg,
    root_dir: Path,
    loggers: Sequence = (),
    callbacks: Sequence[L.Callback] = (),
    ckpt_path: str | None = None,
    checkpointing: bool = True,
    compile: Any = "false",
    quantize_aware: QuantizeAware | None = None,
    tuning: Any = None,
) -> tuple[L.Trainer, float]:
    """Train; returns the trainer and the seconds of training, summed over every resumed segment
    (Lightning's Timer keeps them in the checkpoint). With ``checkpointing``, ``last.ckpt`` holds the
    final step (periodic saves may stop short of it). ``compile``: ``speed.compile`` (compiling.py);
    ``quantize_aware``: the student trains on its fake-quantized weights (quantization/fake_quant.py);
    ``tuning``: which of its parameters train (training/tuning.py; None: all)."""
    extra = {"plugins": [AtomicCheckpointIO()]} if checkpointing else {"enable_checkpointing": False}
    callbacks = list(callbacks)
    timer = next((c for c in callbacks if isinstance(c, Timer)), None)
    if timer is None:  # one Timer only: Lightning refuses two stateful callbacks of one kind
        # it counts, and stops training at `max_time`: given to the Trainer beside this Timer, Lightning
        # would ignore max_time (it adds its own Timer only when the callbacks hold none)
        timer = Timer(duration=trainer_cfg.get("max_time"))
        callbacks.append(timer)
    trainer: L.Trainer = instantiate(
        trainer_cfg,
        max_time=None,  # the Timer above holds it
        logger=list(loggers) or False,
        callbacks=callbacks,
        default_root_dir=str(root_dir),
        **extra,
    )
    models = {"student": module.student, "teacher": module.teacher}
    if check_mode(compile) == "true" and "fsdp" in type(trainer.strategy).__name__.lower():
        raise DistillabError("speed.compile: true is not supported with FSDP; use auto (kernels only)")
    tuned = tuning.applied(module.student) if tuning else contextlib.nullcontext()
    fake_quant = quantize_aware.applied(module.student) if quantize_aware else contextlib.nullcontext()
    with tuned:
        log_trainable(module.student, tuning)
        seq_len = int(datamodule.block_size)
        module.flops_per_token = cost.training_flops_per_token(module.student, module.teacher, seq_len)
        # fake quantization after counting (counting reads weights, which would quantize them), and
        # before the checkpoint check: a resumed checkpoint holds the parametrized names
        with fake_quant:
            if ckpt_path is not None:
                last = root_dir / "checkpoints" / "last.ckpt"
                check_checkpoint_matches(last if ckpt_path == "last" else Path(ckpt_path), module)
            with compiling(compile), compiled_models(models, compile):
                trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
            if checkpointing:  # inside: the names a resume finds (parametrized, adapters) as mid-run
                _checkpoint_final_state(trainer)
    return trainer, timer.time_elapsed("train")


def log_trainable(student, tuning) -> None:
    trainable, total = trainable_parameters(student)
    what = tuning.describe() if tuning else "all parameters"
    log.info(
        "training %s: %s of %s parameters (%.2f%%)",
        what,
        f"{trainable:,}",
        f"{total:,}",
        100 * trainable / total,
    )


def _checkpoint_final_state(trainer: L.Trainer) -> None:
    callback = trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint) and callback.dirpath and trainer.global_step > 0:
        trainer.save_checkpoint(
            Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}",
            weights_only=False,  # optimizer + loop state too: this file is for resuming
        )


def trained_tokens(trainer: L.Trainer, module: DistillModule, data_cfg) -> int:
    """Tokens the student trained on (all ranks, accumulation included): a budget curve's x axis.
    Off-policy: steps x batch x block (also right for runs resumed from checkpoints older than the
    module's count); on-policy: the module's count (a sampled batch trains on its samples only)."""
    if module.on_policy is None:
        return (
            trainer.global_step
            * int(data_cfg.batch_size)
            * int(data_cfg.block_size)
            * trainer.accumulate_grad_batches
            * trainer.world_size
        )
    count = torch.tensor(float(module.trained_tokens))
    if trainer.world_size > 1:
        count = trainer.strategy.reduce(count.to(module.device), reduce_op="sum")
    return int(count)


def training_cost(trainer: L.Trainer, module: DistillModule, data_cfg) -> dict[str, Any]:
    """``train_tokens`` and ``train_flops`` (cost.py: student forward and backward, teacher forward)."""
    tokens = trained_tokens(trainer, module, data_cfg)
    return {"train_tokens": tokens, "train_flops": cost.training_flops(module.flops_per_token, tokens)}


def check_resume(ckpt: str | None, run_dir: Path) -> None:
    """``ckpt_path=last`` must find a checkpoint: a silent fresh start would overwrite the run's outputs."""
    if ckpt == "last" and not (run_dir / "checkpoints" / "last.ckpt").is_file():
        raise DistillabError(
            f"ckpt_path: 'last' but no checkpoint in {run_dir / 'checkpoints'}; pass hydra.run.dir=<the run "
            "to resume> (or paths.run_dir), or drop ckpt_path to start fresh"
        )
    if ckpt not in (None, "last") and not Path(ckpt).is_file():
        raise DistillabError(f"ckpt_path: {ckpt!r} is not a file; valid: last or a path to a .ckpt")
    if ckpt is not None:
        check_checkpoint(run_dir / "checkpoints" / "last.ckpt" if ckpt == "last" else Path(ckpt))


def check_checkpoint(path: Path) -> None:
    """A checkpoint is a zip archive (torch.save): a truncated one has no central directory at its
    end, found here in one line instead of torch's PytorchStreamReader error mid-resume."""
    try:
        with zipfile.ZipFile(path):
            pass
    except (zipfile.BadZipFile, OSError) as err:
        raise DistillabError(
            f"ckpt_path: {path} is not a readable checkpoint ({err}); it may be truncated: resume from an "
            "earlier one or drop ckpt_path to start fresh"
        ) from None


def check_checkpoint_matches(path: Path, module: DistillModule) -> None:
    """The checkpoint was written by this run's student: the same tensors, the same shapes. Another
    cut, width or model would otherwise fail inside Lightning with a list of missing keys. (A sharded
    checkpoint is a folder: Lightning checks it.)"""
    if not path.is_file():
        return
    state = torch.load(path, map_location="cpu", mmap=True, weights_only=False).get("state_dict") or {}
    ours = module.state_dict()
    missing = [k for k in ours if k not in state]
    extra = [k for k in state if k not in ours]
    reshaped = [k for k in ours if k in state and tuple(state[k].shape) != tuple(ours[k].shape)]
    if missing or extra or reshaped:
        example = (
            f"{reshaped[0]}: {tuple(state[reshaped[0]].shape)} there, {tuple(ours[reshaped[0]].shape)} here"
            if reshaped
            else f"{(missing or extra)[0]} {'missing there' if missing else 'not in this student'}"
        )
        raise DistillabError(
            f"ckpt_path: {path} was written by another student ({len(missing)} tensors missing, {len(extra)} "
            f"extra, {len(reshaped)} of another shape; e.g. {example}); resume with the config that wrote "
            "it (its run folder's .hydra/config.yaml) or drop ckpt_path to start fresh"
        )


def generation_totals(trainer: L.Trainer, module: DistillModule) -> dict[str, float]:
    """An on-policy run's sampled steps, generated tokens and generation seconds, summed over ranks
    (seconds: summed over ranks too, i.e. device-seconds)."""
    totals = torch.tensor([float(v) for v in module.generation.values()])
    if trainer.world_size > 1:
        totals = trainer.strategy.reduce(totals.to(module.device), reduce_op="sum").cpu()
    return dict(zip(module.generation, totals.tolist(), strict=True))
