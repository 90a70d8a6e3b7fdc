"""``distillab-prune``: score -> cut (layers, width or weights) -> heal -> evaluate -> retention.

Thin entry point: ``main`` is Hydra's; ``run(cfg)`` does the work and returns the results.

    distillab-prune                                       # 6 of 30 layers by Block Influence, healed
    distillab-prune prune.score=angular prune.layers.schedule=iterative
    distillab-prune prune=width prune.score=wanda prune.width.intermediate_size=1024
    distillab-prune prune=unstructured prune.score=wanda prune.unstructured.pattern=2:4
"""

from __future__ import annotations

import logging
import time
import weakref
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from distillab.app_run import AppRun
from distillab.config import to_plain
from distillab.cost import add_flops
from distillab.data.paths import resolve_data_dir
from distillab.entry import app_boundary, hydra_app
from distillab.errors import DistillabError
from distillab.models.loading import load_from_config
from distillab.pruning.calibration import batches, calibration_blocks
from distillab.pruning.methods import PruneJob, build_method
from distillab.quantization import fake_quant
from distillab.tracking import wandb_run
from distillab.tracking.plots import layer_scores_bar
from distillab.training import tuning
from distillab.training.heal import heal, healing_objective

log = logging.getLogger("distillab")


@app_boundary
def run(cfg: DictConfig) -> dict[str, Any]:
    app = AppRun(cfg)
    teacher, tokenizer = load_from_config(cfg, "model")
    teacher.requires_grad_(False)
    method = build_method(to_plain(cfg.prune), teacher.config)  # every prune.* mistake fails here
    if cfg.heal.get("enabled"):
        healing_objective(cfg.heal)  # and every heal.objective mistake
        check_resumable(cfg.heal, method.name)
    quantize_aware = fake_quant.from_config(to_plain(cfg.heal.get("quantize_aware")), "heal.quantize_aware")
    tuning_kind = tuning.from_config(to_plain(cfg.heal.get("tuning")), quantize_aware, "heal.tuning")
    paths = cfg.paths
    blocks = calibration_blocks(tokenizer, to_plain(cfg.calibration.data), int(cfg.calibration.num_blocks), paths.data_dir, paths.cache_dir)  # fmt: skip
    app.open_loggers()
    app.results["method"] = method.name
    app.evaluate(teacher, tokenizer, "teacher", cached=True)
    healing, evaluate = heal_and_evaluate(app, cfg, teacher, tokenizer, quantize_aware, tuning_kind)
    do_heal = bool(cfg.heal.get("enabled"))
    job = PruneJob(
        teacher, tokenizer, batches(blocks, int(cfg.calibration.batch_size)), app.run_dir, int(cfg.seed),
        resolve_data_dir(paths.data_dir), healing if do_heal else None, evaluate, layer_scores_bar,
    )  # fmt: skip
    student, record = method.apply(job)
    app.results |= record | healing_cost(record)
    app.results["quantize_aware"] = quantize_aware.format if quantize_aware and do_heal else None
    app.results["tuning"] = tuning_kind.describe() if tuning_kind and do_heal else None
    app.results["params"] = {"teacher": teacher.num_parameters(), "student": student.num_parameters()}
    app.export(student, tokenizer)
    if not record.get("final_metrics"):
        evaluate(student, app.run_dir)
    scores = {str(f.relative_to(app.run_dir)): f for f in sorted(app.run_dir.glob("**/scores.png"))}
    wandb_run.log_images(app.loggers, scores)
    params = app.results["params"]
    header = (
        f"## {cfg.experiment_name}: prune {method.name} by {method.score}, {params['teacher'] / 1e6:.1f}M -> "
        f"{params['student'] / 1e6:.1f}M params{', healed' if do_heal else ''}, "
        f"wall {(time.time() - app.start) / 60:.1f} min"
    )
    return app.finish(header, artifacts={"pruned model": app.results.get("student_dir")})


def heal_and_evaluate(app: AppRun, cfg: DictConfig, teacher, tokenizer, quantize_aware, tuning_kind):
    """The removal loop's two callbacks: heal a cut model, and evaluate one (the last one evaluated
    is the student). A model the last phase healed quantization-aware is scored on its grid."""
    healed_on_grid: weakref.WeakSet = weakref.WeakSet()  # (an id() could be reused by a later model)

    def healing(model, work_dir: Path, phase: int = 0, callbacks=(), last: bool = True) -> dict[str, float]:
        # Phase k of iterative removal starts where phase k-1 stopped in the data stream, so ILD
        # and one-shot healing read the same batches at the same total budget. Only the last
        # phase is quantization-aware: earlier ones heal a model that is cut again afterwards.
        start = phase * _heal_batches(cfg.heal.trainer) if phase else 0
        aware = quantize_aware if last else None
        if aware:
            healed_on_grid.add(model)
        return heal(model, teacher, cfg.heal, tokenizer, work_dir, cfg.paths, callbacks, start, compile=cfg.speed.compile, quantize_aware=aware, tuning=tuning_kind)  # fmt: skip

    def evaluate(model, work_dir: Path) -> dict[str, float]:
        with fake_quant.as_stored(model, quantize_aware if model in healed_on_grid else None):
            evaluation = app.evaluate(model, tokenizer, "student", work_dir=work_dir)
        return evaluation.metrics if evaluation else {}

    return healing, evaluate


def check_resumable(heal_cfg, method: str) -> None:
    """A resumed heal must be on the same cut: a layer cut records the layers it kept (``cut.json``,
    pruning/ild.py); a width or 2:4 cut would need its chosen heads and weights, so it heals in one go."""
    if heal_cfg.get("checkpoint_every") and method != "layers":
        raise DistillabError(
            f"heal.checkpoint_every: resumable healing is for layer cuts (prune=layers), not prune={method}; "
            "set heal.checkpoint_every=null"
        )


def healing_cost(record: dict[str, Any]) -> dict[str, float]:
    """``train_tokens`` and ``train_seconds`` summed over every healing phase of the cut (the steps
    of iterative removal, resumed ones included); nothing for an unhealed cut."""
    phases = [s["heal"] for s in record.get("steps") or [] if s.get("heal")]
    phases += [record["heal"]] if record.get("heal") else []
    if not phases:
        return {}
    return {
        "train_tokens": int(sum(p.get("train_tokens", 0) for p in phases)),
        "train_seconds": sum(p.get("train_seconds", 0.0) for p in phases),
        "train_flops": add_flops([p.get("train_flops") for p in phases]),
    }


def _heal_batches(trainer_cfg) -> int:
    """Training batches one healing phase reads (max_steps optimizer steps x accumulation)."""
    return int(trainer_cfg.max_steps) * int(trainer_cfg.get("accumulate_grad_batches") or 1)


main = hydra_app("prune", run)


if __name__ == "__main__":
    main()
