"""Pruning methods. Each ``conf/prune/*.yaml`` names one of these classes by ``_target_``;
``distillab-prune`` checks it against the model's config before the calibration pass, then
``apply`` cuts (and, given a healing function, heals) a copy of the model.

- :class:`LayerRemoval` (``prune=layers``): whole decoder layers, the lowest-scoring by a layer score
  (``layer_scores.py``), one-shot or iteratively with healing and rescoring between steps (``ild.py``).
- :class:`WidthPruning` (``prune=width``): attention heads and MLP neurons by a weight score (``width.py``).
- :class:`UnstructuredSparsity` (``prune=unstructured``): individual weights, a fraction or 2:4
  (``unstructured.py``); healing keeps the zeros.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch

from distillab.config import build_target
from distillab.errors import DistillabError
from distillab.evaluation import tasks
from distillab.evaluation.harness import run_tasks
from distillab.files import write_json_atomic
from distillab.models.surgery import teacher_layer_indices
from distillab.precision import in_run_precision
from distillab.pruning import layer_scores as ls
from distillab.pruning.block_replacement import replace_me, streamline
from distillab.pruning.ild import RemovalPlan, check_plan, remove_layers_iteratively
from distillab.pruning.scores import check_score, score_layers, weight_scores
from distillab.pruning.unstructured import (
    achieved_sparsity,
    apply_masks,
    check_sparsity,
    sparsity_masks,
    two_four_masks,
)
from distillab.pruning.width import check_head_counts, prune_heads, prune_neurons, structure_scores

log = logging.getLogger("distillab")


@dataclass
class PruneJob:
    """What a method works with: the model, its calibration batches and the run's callbacks."""

    model: Any
    tokenizer: Any
    calibration: list
    run_dir: Path
    seed: int = 0
    data_dir: Path | None = None  # resolved local data (benchmark_drop's lm-eval task)
    heal: Callable | None = None  # (model, work_dir, phase=0, callbacks=()) -> metrics
    evaluate: Callable | None = None  # (model, work_dir) -> metrics
    plot_scores: Callable | None = None  # (scores, removed, title, path): a bar chart per step


REPLACEMENTS = (None, "linear", "streamline")  # prune.layers.replace


@dataclass
class LayerRemoval:
    score: str = "block_influence"  # block_influence angular lens_kl ppl_drop benchmark_drop random
    layers: dict[str, Any] = field(default_factory=dict)  # conf/prune/layers.yaml: num_remove schedule ...
    name: ClassVar[str] = "layers"

    def check(self, model_config) -> None:
        lp = self.layers
        check_score(self.score, self.name)
        if lp["schedule"] not in ("one_shot", "iterative"):
            raise DistillabError(
                f"prune.layers.schedule: unknown {lp['schedule']!r}; valid: one_shot, iterative"
            )
        check_plan(model_config.num_hidden_layers, int(lp["num_remove"]), self.per_step)
        replace = lp.get("replace")
        if replace not in REPLACEMENTS:
            raise DistillabError(
                f"prune.layers.replace: {replace!r} is not valid; valid: linear | streamline | null"
            )
        if replace and not (self.score == "angular" and lp.get("contiguous")):
            raise DistillabError(
                f"prune.layers.replace: {replace} replaces one contiguous block; set prune.score=angular "
                "prune.layers.contiguous=true (the block closest to identity, as ReplaceMe and LLM-Streamline choose it)"
            )
        if lp.get("contiguous") and self.score != "angular":  # was ignored without a word
            raise DistillabError(
                f"prune.layers.contiguous: true needs prune.score=angular (the block score), got {self.score!r}; "
                "set prune.score=angular or prune.layers.contiguous=false"
            )
        if self.score == "benchmark_drop":  # read only once scoring starts: checked here, before any compute
            removal = lp.get("removal") or {}
            task, metric = removal.get("task"), removal.get("metric")
            if task not in tasks.registry():
                raise DistillabError(
                    f"prune.layers.removal.task: {task!r} has no local task YAML; valid: {', '.join(tasks.registry())}"
                )
            if metric not in tasks.metrics(task):
                raise DistillabError(
                    f"prune.layers.removal.metric: {metric!r} is not a metric of {task}; valid: "
                    f"{', '.join(tasks.metrics(task))}"
                )

    @property
    def per_step(self) -> int:
        lp = self.layers
        return int(lp["num_remove"] if lp["schedule"] == "one_shot" else lp["per_step"])

    def apply(self, job: PruneJob) -> tuple[Any, dict[str, Any]]:
        lp = self.layers
        contiguous = self.score == "angular" and bool(lp.get("contiguous"))
        plan = RemovalPlan(int(lp["num_remove"]), self.per_step, tuple(lp.get("protect") or ()), contiguous)
        plan = self.with_replacement(plan, job.calibration)
        each_step = lp["schedule"] == "iterative" and bool(lp.get("eval_each_step"))

        def evaluate_step(model, step_dir):
            last = step_dir.name == f"step_{plan.num_steps:02d}"
            return job.evaluate(model, step_dir) if job.evaluate and (each_step or last) else {}

        before = teacher_layer_indices(job.model)  # original indices: the input may itself be a cut model
        student, history = remove_layers_iteratively(
            job.model,
            plan,
            self.score_fn(job, plan.per_step + plan.extra if plan.contiguous else 1),
            job.heal,
            evaluate_step,
            job.run_dir / "steps",
            self.score,
            job.plot_scores,
        )
        removed = sorted(set(before) - set(teacher_layer_indices(student)))  # by this run
        write_json_atomic(
            job.run_dir / "scores.json",
            [{k: h[k] for k in ("step", "scores", "removed_teacher_layers")} for h in history],
        )
        return student, {
            "removed_teacher_layers": removed,
            "kept_teacher_layers": teacher_layer_indices(student),
            "steps": history,
            "final_metrics": history[-1].get("metrics") if history else None,
        }

    def with_replacement(self, plan: RemovalPlan, calibration: list) -> RemovalPlan:
        """``prune.layers.replace``: what stands in for the removed block (pruning/block_replacement.py)."""
        replace = self.layers.get("replace")
        if replace == "linear":  # ReplaceMe: a least-squares map folded into the layer before the block
            return dataclasses.replace(
                plan, cut=lambda m, block: replace_me(m, calibration, block), keep_first=True
            )
        if replace == "streamline":  # the block's first layer, trained to map its input to its output
            fit = self.layers.get("streamline") or {}
            steps, lr = int(fit.get("steps", 200)), float(fit.get("lr", 1e-3))
            return dataclasses.replace(
                plan, cut=lambda m, block: streamline(m, calibration, block, steps, lr), extra=1
            )
        return plan

    def score_fn(self, job: PruneJob, angular_block: int = 1) -> Callable[[Any, int], list[float]]:
        """``(model, step) -> per-layer (or per-block) importance`` for this method's score;
        ``angular_block``: the block length a contiguous cut scores (1: single layers)."""
        lp, removal = self.layers, self.layers.get("removal") or {}  # removal: read by the drop scores only

        @in_run_precision  # each candidate scored in the run's precision, like every other layer score
        def benchmark(
            m,
        ) -> float:  # benchmark_drop's metric, higher = better: the lm-eval task on the local data
            task, metric = removal["task"], removal["metric"]
            suite = {task: {"limit": removal["limit"], "num_fewshot": removal.get("num_fewshot", 0)}}
            value = run_tasks(m, job.tokenizer, suite, job.run_dir / "removal_eval", job.data_dir)[
                f"{task}/{metric}"
            ]
            return (
                value if tasks.higher_is_better(task, metric) else -value
            )  # e.g. choice_nll: lower is better

        def scores(model, step: int) -> list[float]:
            inputs = ls.ScoreInputs(
                calibration=job.calibration,
                seed=int(job.seed) * 1000 + step,
                angular_block=angular_block,
                lens_stride=int(lp["lens_stride"]),
                ppl_batches=int(removal.get("num_batches", ls.ScoreInputs.ppl_batches)),
                benchmark=benchmark,
            )
            return score_layers(self.score, model, inputs)

        return scores


@dataclass
class WidthPruning:
    score: str = "wanda"  # magnitude gradient taylor wanda
    width: dict[str, Any] = field(
        default_factory=dict
    )  # num_attention_heads num_key_value_heads intermediate_size
    name: ClassVar[str] = "width"

    def check(self, model_config) -> None:
        check_score(self.score, self.name)
        w = self.width
        if not (w.get("num_attention_heads") or w.get("intermediate_size")):
            raise DistillabError(
                "prune.width: set num_attention_heads and/or intermediate_size (the new sizes)"
            )
        if w.get("num_attention_heads"):
            kv = w.get("num_key_value_heads") or model_config.num_key_value_heads
            check_head_counts(model_config, int(w["num_attention_heads"]), int(kv))
        size = w.get("intermediate_size")
        if size and not 1 <= int(size) <= model_config.intermediate_size:
            raise DistillabError(
                f"prune.width.intermediate_size: {size} outside 1..{model_config.intermediate_size}"
            )

    def apply(self, job: PruneJob) -> tuple[Any, dict[str, Any]]:
        student = copy.deepcopy(job.model).requires_grad_(True)
        structures = structure_scores(weight_scores(student, self.score, job.calibration, self.name), student)
        record: dict[str, Any] = {}
        w = self.width
        if w.get("num_attention_heads"):
            kv = w.get("num_key_value_heads") or student.config.num_key_value_heads
            record["kept_heads"] = prune_heads(student, structures, int(w["num_attention_heads"]), int(kv))
        if w.get("intermediate_size"):
            record["kept_neurons_per_layer"] = int(w["intermediate_size"])
            prune_neurons(student, structures, int(w["intermediate_size"]))
        if job.heal is not None:
            record["heal"] = job.heal(student, job.run_dir / "heal")
        return student, record


@dataclass
class UnstructuredSparsity:
    score: str = "wanda"  # magnitude gradient taylor wanda
    unstructured: dict[str, Any] = field(
        default_factory=dict
    )  # conf/prune/unstructured.yaml: sparsity scope pattern
    name: ClassVar[str] = "unstructured"

    def check(self, model_config) -> None:
        check_score(self.score, self.name)
        u = self.unstructured
        check_sparsity(u["sparsity"], "prune.unstructured.sparsity")
        if u["pattern"] not in (None, "2:4"):
            raise DistillabError(f"prune.unstructured.pattern: unknown {u['pattern']!r}; valid: null, 2:4")

    def apply(self, job: PruneJob) -> tuple[Any, dict[str, Any]]:
        student = copy.deepcopy(job.model).requires_grad_(True)
        scores = weight_scores(student, self.score, job.calibration, self.name)
        u = self.unstructured
        masks = (
            two_four_masks(scores)
            if u["pattern"] == "2:4"
            else sparsity_masks(scores, u["sparsity"], u["scope"])
        )
        apply_masks(student, masks)
        record: dict[str, Any] = {"sparsity": achieved_sparsity(student, list(masks))}
        log.info("achieved sparsity: %s", record["sparsity"])
        if job.heal is not None:
            record["heal"] = job.heal(student, job.run_dir / "heal", callbacks=[KeepMasks(masks)])
            record["sparsity_after_heal"] = achieved_sparsity(student, list(masks))
        return student, record


class KeepMasks(L.Callback):
    """Re-zero pruned weights after every optimizer step, so healing keeps the sparsity."""

    def __init__(self, masks: dict[str, torch.Tensor]):
        self.masks = masks

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        apply_masks(pl_module.student, self.masks)


def build_method(
    prune_cfg: dict[str, Any], model_config
) -> LayerRemoval | WidthPruning | UnstructuredSparsity:
    """The ``prune`` config's method, checked against the model before any compute."""
    method = build_target(
        prune_cfg, "prune", "a pruning method", "apply", "prune=layers | width | unstructured"
    )
    method.check(model_config)
    return method
