"""Layer removal, one-shot or iterative (ILD): score -> remove the k least important -> heal -> repeat.

Every step is a folder ``steps/NN/`` holding the scores (JSON + bar chart), the cut-and-healed
model (HF folder) and ``step.json`` with its metrics. ``step.json`` is written last and the model
folder is renamed into place, so a folder with ``step.json`` is complete: an interrupted loop
resumes after the last complete step (the model is reloaded from it), never from a half step.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import AutoModelForCausalLM

from distillab.errors import DistillabError
from distillab.files import read_json, write_json_atomic
from distillab.models.export import save_model_atomic
from distillab.models.surgery import remove_layers, teacher_layer_indices
from distillab.pruning.layer_scores import least_important

log = logging.getLogger(__name__)

ScoreFn = Callable[[Any, int], list[float]]  # (model, step) -> per-layer (or per-block) importance
StepFn = Callable[[Any, Path], dict[str, Any]]  # (model, step_dir) -> metrics (evaluate)
# (model, step_dir, phases healed before, last=is this the last phase) -> metrics
HealFn = Callable[..., dict[str, Any]]


Cut = Callable[[Any, list[int]], Any]  # (model, chosen layers) -> the cut model (a copy)


@dataclass
class RemovalPlan:
    num_remove: int
    per_step: int
    protect: tuple[int, ...] = ()  # teacher layer indices never removed
    contiguous: bool = False  # scores are per block start (angular distance with n = per_step + extra)
    cut: Cut = remove_layers  # or a block replacement (pruning/block_replacement.py)
    extra: int = 0  # layers chosen beyond those removed (streamline: the block's replacement layer)
    keep_first: bool = False  # the model's first layer is never chosen (ReplaceMe folds into the one before)

    @property
    def num_steps(self) -> int:
        return math.ceil(self.num_remove / self.per_step)


def check_plan(num_layers: int, num_remove: int, per_step: int) -> None:
    if not 1 <= num_remove <= num_layers - 1:
        raise DistillabError(
            f"prune.layers.num_remove: {num_remove} outside 1..{num_layers - 1} for a {num_layers}-layer model"
        )
    if not 1 <= per_step <= num_remove:
        raise DistillabError(f"prune.layers.per_step: {per_step} outside 1..{num_remove}")


def check_same_cut(step_dir: Path, kept: list[int]) -> None:
    """A healing checkpoint (``heal.checkpoint_every``) resumes only on the cut it was trained on:
    ``cut.json`` records the kept teacher layers before healing starts."""
    path = step_dir / "cut.json"
    if (step_dir / "checkpoints").is_dir() and path.is_file():
        before = read_json(path, f"delete {step_dir} to redo that removal step")["kept_teacher_layers"]
        if before != kept:
            raise DistillabError(
                f"{step_dir}: this cut keeps teacher layers {kept}, its healing checkpoint was trained "
                f"on {before}; delete {step_dir / 'checkpoints'} to heal this cut afresh"
            )
    write_json_atomic(path, {"kept_teacher_layers": kept})


def remove_layers_iteratively(
    model,
    plan: RemovalPlan,
    score: ScoreFn,
    heal: HealFn | None,
    evaluate: StepFn | None,
    root: Path,
    score_name: str,
    plot_scores: Callable[[list[float], list[int], str, Path], Any] | None = None,
) -> tuple[Any, list[dict[str, Any]]]:
    """Run (or resume) the loop; returns the final model and one record per step."""
    history: list[dict[str, Any]] = []
    removed_so_far = 0
    for step in range(1, plan.num_steps + 1):
        step_dir = root / f"step_{step:02d}"
        k = min(plan.per_step, plan.num_remove - removed_so_far)
        if (step_dir / "step.json").is_file():
            record = read_json(step_dir / "step.json", f"delete {step_dir} to redo that removal step")
            model = AutoModelForCausalLM.from_pretrained(step_dir / "model", torch_dtype=model.dtype)
            log.info("step %d already done (%s): resuming from it", step, step_dir)
            history.append(record)
            removed_so_far += k
            continue
        origin = teacher_layer_indices(model)
        scores = score(model, step)
        protect = [i for i, t in enumerate(origin) if t in set(plan.protect)] + (
            [0] if plan.keep_first else []
        )
        chosen = least_important(scores, k + plan.extra, protect, contiguous_block=plan.contiguous)
        model = plan.cut(model, chosen)
        kept = teacher_layer_indices(model)
        remove = [i for i, t in enumerate(origin) if t not in set(kept)]
        record: dict[str, Any] = {
            "step": step,
            "score": score_name,
            "scores": scores,
            "removed": remove,
            "removed_teacher_layers": [origin[i] for i in remove],
        }
        if plot_scores is not None:
            title = f"{score_name}, step {step}: remove teacher layers {record['removed_teacher_layers']}"
            plot_scores(scores, chosen, title, step_dir / "scores.png")
        record["kept_teacher_layers"] = kept
        if heal is not None:
            check_same_cut(step_dir, kept)
            record["heal"] = heal(model, step_dir, step - 1, last=step == plan.num_steps)
        if evaluate is not None:
            record["metrics"] = evaluate(model, step_dir)
        save_model_atomic(model, step_dir / "model")
        write_json_atomic(step_dir / "step.json", record)  # last: marks the step complete
        shutil.rmtree(step_dir / "checkpoints", ignore_errors=True)  # resume state of a finished heal
        log.info("step %d: removed teacher layers %s", step, record["removed_teacher_layers"])
        history.append(record)
        removed_so_far += k
    return model, history
