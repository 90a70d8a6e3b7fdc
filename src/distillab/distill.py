"""``distillab-distill``: teacher -> student -> distil -> evaluate both -> retention.

Thin entry point: ``main`` is Hydra's; ``run(cfg)`` does the work and returns the metrics (tests
and sweeps call it directly).
"""

from __future__ import annotations

import gc
import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from distillab.config import to_plain
from distillab.data.datamodule import CorpusDataModule
from distillab.data.teacher_cache import check_cache_config, prepare_teacher_cache
from distillab.data.token_alignment import TokenAligner
from distillab.entry import hydra_app, start_run
from distillab.errors import DistillabError
from distillab.evaluation.footprint import bytes_on_disk
from distillab.evaluation.retention import primary_metrics, retention_results, retention_rows
from distillab.evaluation.suite import cached_evaluate_suite, evaluate_suite
from distillab.models.export import save_model_atomic
from distillab.models.loading import count_parameters, load_model
from distillab.models.spec import ModelSpec
from distillab.models.student import build_student, check_vocab_match
from distillab.models.surgery import teacher_layer_indices
from distillab.objectives.contrastive import attach_prompt_pools
from distillab.objectives.cross_tokenizer import head_reproduces_logits
from distillab.objectives.objective import build_objective
from distillab.pruning.calibration import batches, calibration_blocks
from distillab.tracking import wandb_run
from distillab.tracking.report import write_results
from distillab.training.checkpoint_io import AtomicCheckpointIO
from distillab.training.distill_module import DistillModule
from distillab.training.on_policy import OnPolicy
from distillab.training.sharding import is_sharded, unsharded_copy

log = logging.getLogger("distillab")


def run(cfg: DictConfig) -> dict[str, Any]:
    start = time.time()
    run_dir = start_run(cfg)
    check_resume(cfg, run_dir)
    L.seed_everything(cfg.seed, workers=True)

    # Everything that can be wrong with the config fails here, before any minute is spent.
    objective = build_objective(to_plain(cfg.objective.terms))
    teacher, tokenizer = load_model(
        ModelSpec.from_config(to_plain(cfg.teacher), key="teacher"), key="teacher"
    )
    data_dir, cache_dir = cfg.paths.data_dir, cfg.paths.cache_dir

    def calibration(num_blocks: int) -> list:  # for a student cut by a layer score
        blocks = calibration_blocks(
            tokenizer, to_plain(cfg.data), num_blocks, data_dir, cache_dir, key="student.calibration_blocks"
        )
        return batches(blocks, 4)

    student, student_tok = build_student(teacher, to_plain(cfg.student), tokenizer, calibration)
    cache_cfg = check_cache_config(objective, to_plain(cfg.get("teacher_cache") or {}))
    aligner = None
    if objective.cross_tokenizer:  # the teacher reads its own tokenization of the student's text
        objective.attach_tokenizers(student_tok, tokenizer)
        aligner = TokenAligner(student_tok, tokenizer)
        check_cross_tokenizer_teacher(teacher, tokenizer, to_plain(cfg.trainer))
    elif objective.needs_teacher or objective.needs_cache:
        check_vocab_match(teacher, student, tokenizer, student_tok)
    teacher_layers, teacher_params = teacher.config.num_hidden_layers, count_parameters(teacher)
    datamodule = CorpusDataModule(
        student_tok, **to_plain(cfg.data), data_dir=cfg.paths.data_dir, cache_dir=cfg.paths.cache_dir
    )
    datamodule.setup("fit")
    attach_prompt_pools(objective, student_tok, cfg.paths.data_dir)
    log.info(
        "teacher %d layers, %.1fM params -> student %d layers (teacher layers %s), %.1fM params",
        teacher_layers,
        teacher_params / 1e6,
        student.config.num_hidden_layers,
        teacher_layer_indices(student),
        count_parameters(student) / 1e6,
    )

    module = DistillModule(
        student,
        objective,
        teacher if objective.needs_teacher else None,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        aligner=aligner,
        on_policy=on_policy_config(cfg, objective),
        student_tokenizer=student_tok,
    )
    loggers = wandb_run.make_loggers(cfg.get("logger"))
    wandb_run.log_config(loggers, {**to_plain(cfg), "objective_summary": module.objective_summary})
    results: dict[str, Any] = {
        "run_dir": str(run_dir),
        "experiment": cfg.experiment_name,
        "objective_summary": module.objective_summary,
    }
    eval_cfg, data_dir, cache = cfg.get("eval"), cfg.paths.data_dir, Path(cfg.paths.cache_dir)
    items = {}  # per-item results of each evaluated model, saved under run_dir/items/
    # Lightning re-runs this script for ranks > 0 (DDP/FSDP): only rank 0 evaluates.
    if eval_cfg and rank_zero_only.rank == 0:
        eval_start = time.time()
        teacher_eval, hit = cached_evaluate_suite(teacher, tokenizer, eval_cfg, run_dir, data_dir, cache)
        results["teacher"], items["teacher"] = teacher_eval.metrics, teacher_eval.items
        if not hit:  # wall time of each model's evaluation: what a suite costs on this machine
            results["eval_seconds"] = {"teacher": time.time() - eval_start}
        log.info("teacher evaluated%s", " (from cache)" if hit else "")
        if cfg.get("eval_before_training"):  # cached too: the same cut is the start of many runs
            before, _ = cached_evaluate_suite(student, student_tok, eval_cfg, run_dir, data_dir, cache)
            results["student_before"], items["student_before"] = before.metrics, before.items
    if objective.needs_cache:
        results["teacher_cache"] = str(
            prepare_teacher_cache(teacher, tokenizer, datamodule, cache, **cache_cfg)
        )
    if not objective.needs_teacher:
        del teacher  # CE-only or cached-teacher objectives train with no teacher in memory
        gc.collect()

    callbacks = list(instantiate(cfg.callbacks).values()) if cfg.get("callbacks") else []
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        logger=loggers or False,
        callbacks=callbacks,
        default_root_dir=str(run_dir),
        plugins=[AtomicCheckpointIO()],
    )
    train_start = time.time()
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    results["train_seconds"] = time.time() - train_start
    results["world_size"] = trainer.world_size
    results["train_tokens"] = trained_tokens(trainer, module, cfg)
    _checkpoint_final_state(trainer)
    if is_sharded(student):  # FSDP: gather the full student (every rank joins), rank 0 goes on with it
        student = unsharded_copy(student)
    if not trainer.is_global_zero:  # DDP: rank 0 alone evaluates, exports and writes results
        return {"run_dir": str(run_dir), "rank": trainer.global_rank}
    results["train_metrics"] = {k: float(v) for k, v in trainer.callback_metrics.items()}

    if cfg.get("export", True):
        export_dir = run_dir / "student"
        save_model_atomic(student, export_dir, student_tok)
        results["student_dir"] = str(export_dir)
        results["bytes"] = {"student": bytes_on_disk(export_dir)}
    results["params"] = {"teacher": teacher_params, "student": count_parameters(student)}

    rows = []
    if eval_cfg:
        eval_start = time.time()
        student_eval = evaluate_suite(student, student_tok, eval_cfg, run_dir, data_dir)
        results["student"], items["student"] = student_eval.metrics, student_eval.items
        results.setdefault("eval_seconds", {})["student"] = time.time() - eval_start
        rows = retention_rows(
            results["teacher"],
            results["student"],
            results.get("student_before"),
            items["teacher"],
            items["student"],
            primary_metrics(eval_cfg),
            skip_tasks=per_token_tasks(eval_cfg, aligner),
        )
        results |= retention_results(rows)
        flat = wandb_run.summary_metrics(results)
        flat |= {f"before/{k}": v for k, v in (results.get("student_before") or {}).items()}
        wandb_run.log_evaluation(loggers, flat, rows, step=trainer.global_step)
    results["wall_seconds"] = time.time() - start
    header = (
        f"## {cfg.experiment_name}: teacher {teacher_layers} layers "
        f"({results['params']['teacher'] / 1e6:.1f}M) vs student {student.config.num_hidden_layers} layers "
        f"({results['params']['student'] / 1e6:.1f}M), {trainer.global_step} steps, "
        f"wall {results['wall_seconds'] / 60:.1f} min"
    )
    print("\n" + write_results(run_dir, results, rows, header, items))
    results["wandb_dir"] = wandb_run.finish(loggers)
    print(
        f"run directory: {run_dir}\nexported student: {results.get('student_dir')}\nW&B files: {results['wandb_dir']}"
        " (sync with `wandb sync <dir>`)"
    )
    return results


def on_policy_config(cfg: DictConfig, objective) -> OnPolicy | None:
    """``on_policy`` block -> :class:`OnPolicy`, checked against the objective and the data."""
    block = to_plain(cfg.get("on_policy") or {})
    try:
        on_policy = OnPolicy(**block, seed=int(cfg.seed))
    except TypeError as err:
        raise DistillabError(
            f"on_policy: {err}; valid keys: fraction, prompt_tokens, new_tokens, temperature"
        ) from None
    if not on_policy.enabled:
        return None
    if not objective.needs_teacher:
        raise DistillabError(
            "on_policy.fraction: > 0 needs a teacher term in the objective (on-policy batches train only the "
            "teacher's terms; ce alone would learn from the student's own samples)"
        )
    if on_policy.prompt_tokens >= int(cfg.data.block_size):
        raise DistillabError(
            f"on_policy.prompt_tokens: {on_policy.prompt_tokens} leaves no room in data.block_size "
            f"{cfg.data.block_size}; valid: 1..{int(cfg.data.block_size) - 1}"
        )
    return on_policy


def trained_tokens(trainer: L.Trainer, module: DistillModule, cfg: DictConfig) -> int:
    """Tokens the student trained on (all ranks, accumulation included): a budget curve's x axis.
    Off-policy: steps x batch x block (also right for runs resumed from checkpoints older than the
    module's count); on-policy: the module's count (a sampled batch trains on its samples only)."""
    if module.on_policy is None:
        return (
            trainer.global_step
            * int(cfg.data.batch_size)
            * int(cfg.data.block_size)
            * trainer.accumulate_grad_batches
            * trainer.world_size
        )
    count = torch.tensor(float(module.trained_tokens))
    if trainer.world_size > 1:
        count = trainer.strategy.reduce(count.to(module.device), reduce_op="sum")
    return int(count)


def check_cross_tokenizer_teacher(teacher, tokenizer, trainer_cfg: dict[str, Any]) -> None:
    """What cross_kd cannot do, refused before the teacher's evaluation spends any minute."""
    strategy = trainer_cfg.get("strategy")
    target = strategy.get("_target_", "") if isinstance(strategy, dict) else str(strategy or "")
    if "fsdp" in target.lower():
        raise DistillabError(
            "trainer: FSDP with a teacher of another tokenizer is not supported yet; use trainer=ddp"
        )
    if not head_reproduces_logits(teacher, tokenizer("a b c", return_tensors="pt").input_ids):
        raise DistillabError(
            f"teacher: {type(teacher).__name__} rescales its logits after the LM head; cross_kd reads "
            "head(final hidden state) and would distil wrong values from it"
        )


def per_token_tasks(eval_cfg, aligner: TokenAligner | None) -> frozenset[str]:
    """Perplexity sets, when the teacher counts tokens of another tokenizer: their per-token values
    (ppl, nll) are not comparable, so they get no retention (the lm-eval tasks' per-document values are)."""
    if aligner is None or aligner.same_tokenizer:
        return frozenset()
    skipped = frozenset((eval_cfg.get("perplexity") or {}).keys())
    if skipped:
        log.info(
            "no retention for %s: teacher and student perplexities count different tokens", sorted(skipped)
        )
    return skipped


def check_resume(cfg: DictConfig, run_dir: Path) -> None:
    """``ckpt_path=last`` must find a checkpoint: a silent fresh start would overwrite the run's outputs."""
    ckpt = cfg.get("ckpt_path")
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
    import zipfile

    try:
        with zipfile.ZipFile(path):
            pass
    except (zipfile.BadZipFile, OSError) as err:
        raise DistillabError(
            f"ckpt_path: {path} is not a readable checkpoint ({err}); it may be truncated: resume from an "
            "earlier one or drop ckpt_path to start fresh"
        ) from None


def _checkpoint_final_state(trainer: L.Trainer) -> None:
    """Always leave last.ckpt at the final step (periodic saves may have stopped short of it)."""
    callback = trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint) and callback.dirpath and trainer.global_step > 0:
        trainer.save_checkpoint(
            Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}",
            weights_only=False,  # optimizer + loop state too: this file is for resuming
        )


main = hydra_app("distill", run)


if __name__ == "__main__":
    main()
