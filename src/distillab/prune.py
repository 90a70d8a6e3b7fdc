"""``distillab-prune``: score -> cut (layers, width or weights) -> heal -> evaluate -> retention.

Thin entry point: ``main`` is Hydra's; ``run(cfg)`` does the work and returns the results.

    distillab-prune                                       # 6 of 30 layers by Block Influence, healed
    distillab-prune prune.score=angular prune.layers.schedule=iterative
    distillab-prune prune.method=width prune.score=wanda prune.width.intermediate_size=1024
    distillab-prune prune.method=unstructured prune.score=wanda prune.unstructured.pattern=2:4
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig

from distillab.app_run import AppRun
from distillab.config import to_plain
from distillab.data.paths import resolve_data_dir
from distillab.entry import hydra_app
from distillab.errors import DistillabError
from distillab.evaluation.harness import run_tasks
from distillab.files import write_json_atomic
from distillab.models.loading import count_parameters, load_model
from distillab.models.spec import ModelSpec
from distillab.models.surgery import teacher_layer_indices
from distillab.pruning import layer_scores as ls
from distillab.pruning.calibration import batches, calibration_blocks
from distillab.pruning.ild import RemovalPlan, check_plan, remove_layers_iteratively
from distillab.pruning.unstructured import (
    achieved_sparsity,
    apply_masks,
    check_sparsity,
    sparsity_masks,
    two_four_masks,
)
from distillab.pruning.weight_scores import WEIGHT_SCORES, weight_scores
from distillab.pruning.width import check_head_counts, prune_heads, prune_neurons, structure_scores
from distillab.tracking import wandb_run
from distillab.training.heal import heal

log = logging.getLogger("distillab")

METHODS = ("layers", "width", "unstructured")


def check_config(cfg: DictConfig, model_cfg) -> None:
    """Every user mistake in ``prune.*`` fails here, before the calibration pass."""
    p = cfg.prune
    if p.method not in METHODS:
        raise DistillabError(f"prune.method: unknown {p.method!r}; valid: {', '.join(METHODS)}")
    if p.method == "layers":
        ls.check_score_names([p.score])
        if p.layers.schedule not in ("one_shot", "iterative"):
            raise DistillabError(
                f"prune.layers.schedule: unknown {p.layers.schedule!r}; valid: one_shot, iterative"
            )
        per_step = p.layers.num_remove if p.layers.schedule == "one_shot" else p.layers.per_step
        check_plan(model_cfg.num_hidden_layers, int(p.layers.num_remove), int(per_step))
        if p.layers.get("contiguous") and p.score != "angular":  # was ignored without a word
            raise DistillabError(
                f"prune.layers.contiguous: true needs prune.score=angular (the block score), got {p.score!r}; "
                "set prune.score=angular or prune.layers.contiguous=false"
            )
    elif p.score not in WEIGHT_SCORES:
        raise DistillabError(
            f"prune.score: {p.score!r} is not a weight score; valid for {p.method}: {', '.join(WEIGHT_SCORES)}"
        )
    if p.method == "unstructured":
        check_sparsity(p.unstructured.sparsity, "prune.unstructured.sparsity")
        if p.unstructured.pattern not in (None, "2:4"):
            raise DistillabError(
                f"prune.unstructured.pattern: unknown {p.unstructured.pattern!r}; valid: null, 2:4"
            )
    if p.method == "width" and not (p.width.num_attention_heads or p.width.intermediate_size):
        raise DistillabError("prune.width: set num_attention_heads and/or intermediate_size (the new sizes)")
    if p.method == "width" and p.width.num_attention_heads:
        kv = p.width.get("num_key_value_heads") or model_cfg.num_key_value_heads
        check_head_counts(model_cfg, int(p.width.num_attention_heads), int(kv))
    if p.method == "width" and p.width.intermediate_size:
        if not 1 <= int(p.width.intermediate_size) <= model_cfg.intermediate_size:
            raise DistillabError(
                f"prune.width.intermediate_size: {p.width.intermediate_size} outside 1..{model_cfg.intermediate_size}"
            )


def run(cfg: DictConfig) -> dict[str, Any]:
    app = AppRun(cfg)
    teacher, tokenizer = load_model(ModelSpec.from_config(to_plain(cfg.model), key="model"), key="model")
    teacher.requires_grad_(False)
    check_config(cfg, teacher.config)
    p = cfg.prune
    calib = batches(
        calibration_blocks(tokenizer, to_plain(cfg.calibration.data), int(cfg.calibration.num_blocks), *paths_of(cfg)),
        int(cfg.calibration.batch_size),
    )  # fmt: skip
    app.open_loggers()
    app.results["method"] = p.method
    app.evaluate(teacher, tokenizer, "teacher", cached=True)

    def evaluate(model, work_dir: Path) -> dict[str, float]:  # the last one evaluated is the student
        evaluation = app.evaluate(model, tokenizer, "student", work_dir=work_dir)
        return evaluation.metrics if evaluation else {}

    def healing(model, work_dir: Path, phase: int = 0, callbacks=()) -> dict[str, float]:
        # Phase k of iterative removal starts where phase k-1 stopped in the data stream, so ILD
        # and one-shot healing read the same batches at the same total budget.
        start = phase * _heal_batches(cfg.heal.trainer) if phase else 0
        return heal(model, teacher, cfg.heal, tokenizer, work_dir, cfg.paths, callbacks, start)

    do_heal = bool(cfg.heal.get("enabled"))
    if p.method == "layers":
        student, record = _prune_layers(
            cfg, teacher, tokenizer, calib, app.run_dir, healing if do_heal else None, evaluate
        )
    else:
        student, record = _prune_weights(cfg, teacher, calib, app.run_dir, healing if do_heal else None)
    app.results |= record
    app.results["params"] = {"teacher": count_parameters(teacher), "student": count_parameters(student)}
    app.export(student, tokenizer)
    if not record.get("final_metrics"):
        evaluate(student, app.run_dir)
    scores = {str(f.relative_to(app.run_dir)): f for f in sorted(app.run_dir.glob("**/scores.png"))}
    wandb_run.log_images(app.loggers, scores)
    params = app.results["params"]
    header = (
        f"## {cfg.experiment_name}: prune {p.method} by {p.score}, {params['teacher'] / 1e6:.1f}M -> "
        f"{params['student'] / 1e6:.1f}M params{', healed' if do_heal else ''}, "
        f"wall {(time.time() - app.start) / 60:.1f} min"
    )
    return app.finish(header, artifacts={"pruned model": app.results.get("student_dir")})


def paths_of(cfg: DictConfig) -> tuple[str | None, str | None]:
    return cfg.paths.data_dir, cfg.paths.cache_dir


def _heal_batches(trainer_cfg) -> int:
    """Training batches one healing phase reads (max_steps optimizer steps x accumulation)."""
    return int(trainer_cfg.max_steps) * int(trainer_cfg.get("accumulate_grad_batches") or 1)


def _layer_score_fn(cfg: DictConfig, tokenizer, calib, run_dir: Path):
    p, lp = cfg.prune, cfg.prune.layers
    contiguous = p.score == "angular" and bool(lp.get("contiguous"))
    block = (lp.num_remove if lp.schedule == "one_shot" else lp.per_step) if contiguous else 1

    def score(model, step: int) -> list[float]:
        if p.score in ls.ACTIVATION_SCORES:
            return ls.activation_layer_scores(
                model, calib, [p.score], angular_block=block, lens_stride=int(lp.lens_stride)
            )[p.score]
        if p.score == "random":
            return ls.random_scores(model.config.num_hidden_layers, int(cfg.seed) * 1000 + step)
        if p.score == "ppl_drop":
            subset = calib[: int(lp.removal.num_batches)]
            return ls.removal_drop_scores(model, lambda m: ls.calibration_perplexity(m, subset), False)[0]
        task, metric = lp.removal.task, lp.removal.metric
        tasks = {task: {"limit": lp.removal.limit, "num_fewshot": lp.removal.get("num_fewshot", 0)}}
        local = resolve_data_dir(cfg.paths.data_dir)

        def bench(m) -> float:
            return run_tasks(m, tokenizer, tasks, run_dir / "removal_eval", local)[f"{task}/{metric}"]

        return ls.removal_drop_scores(model, bench, higher_is_better=True)[0]

    return score, contiguous


def _prune_layers(cfg, teacher, tokenizer, calib, run_dir, healing, evaluate):
    lp = cfg.prune.layers
    per_step = int(lp.num_remove if lp.schedule == "one_shot" else lp.per_step)
    score, contiguous = _layer_score_fn(cfg, tokenizer, calib, run_dir)
    plan = RemovalPlan(int(lp.num_remove), per_step, tuple(lp.get("protect") or ()), contiguous)
    each_step = lp.schedule == "iterative" and bool(lp.get("eval_each_step"))
    last_eval = {}

    def evaluate_step(model, step_dir):
        if each_step or step_dir.name == f"step_{plan.num_steps:02d}":
            last_eval["metrics"] = evaluate(model, step_dir)
            return last_eval["metrics"]
        return {}

    before = teacher_layer_indices(teacher)  # original indices: the input may itself be a cut model
    student, history = remove_layers_iteratively(
        teacher, plan, score, healing, evaluate_step, run_dir / "steps", cfg.prune.score
    )
    removed = sorted(set(before) - set(teacher_layer_indices(student)))  # by this run
    write_json_atomic(
        run_dir / "scores.json",
        [{k: h[k] for k in ("step", "scores", "removed_teacher_layers")} for h in history],
    )
    return student, {
        "removed_teacher_layers": removed,
        "kept_teacher_layers": teacher_layer_indices(student),
        "steps": history,
        "final_metrics": history[-1].get("metrics") if history else None,
    }


def _prune_weights(cfg, teacher, calib, run_dir, healing):
    p = cfg.prune
    student = copy.deepcopy(teacher)
    student.requires_grad_(True)
    scores = weight_scores(student, p.score, calib)
    record: dict[str, Any] = {}
    callbacks = []
    if p.method == "width":
        w = p.width
        structures = structure_scores(scores, student)
        if w.num_attention_heads:
            kv = w.get("num_key_value_heads") or student.config.num_key_value_heads
            record["kept_heads"] = prune_heads(student, structures, int(w.num_attention_heads), int(kv))
        if w.intermediate_size:
            record["kept_neurons_per_layer"] = int(w.intermediate_size)
            prune_neurons(student, structures, int(w.intermediate_size))
    else:
        u = p.unstructured
        masks = two_four_masks(scores) if u.pattern == "2:4" else sparsity_masks(scores, u.sparsity, u.scope)
        apply_masks(student, masks)
        callbacks.append(KeepMasks(masks))
        record["sparsity"] = achieved_sparsity(student, list(masks))
        log.info("achieved sparsity: %s", record["sparsity"])
    if healing is not None:
        record["heal"] = healing(student, run_dir / "heal", callbacks=callbacks)
        if p.method == "unstructured":
            record["sparsity_after_heal"] = achieved_sparsity(student, list(masks))
    return student, record


class KeepMasks(L.Callback):
    """Re-zero pruned weights after every optimizer step, so healing keeps the sparsity."""

    def __init__(self, masks: dict[str, torch.Tensor]):
        self.masks = masks

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        apply_masks(pl_module.student, self.masks)


main = hydra_app("prune", run)


if __name__ == "__main__":
    main()
