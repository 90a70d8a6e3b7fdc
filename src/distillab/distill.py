"""``distillab-distill``: model -> student (cut from it) -> distil from the teacher (the model itself
unless ``teacher`` names another) -> evaluate both -> retention.

Thin entry point: ``main`` is Hydra's; ``run(cfg)`` does the work and returns the metrics (tests
and sweeps call it directly).
"""

from __future__ import annotations

import gc
import json
import logging
import time
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from distillab.app_run import AppRun
from distillab.config import to_plain
from distillab.data.teacher_cache import check_cache_config, prepare_teacher_cache
from distillab.data.token_alignment import TokenAligner
from distillab.entry import app_boundary, hydra_app
from distillab.errors import DistillabError
from distillab.models.loading import load_from_config, load_teacher
from distillab.models.student import check_vocab_match
from distillab.models.surgery import teacher_layer_indices
from distillab.objectives.cross_tokenizer import head_reproduces_logits
from distillab.objectives.objective import build_objective
from distillab.pruning.calibration import batches, calibration_blocks
from distillab.quantization import fake_quant
from distillab.training import tuning
from distillab.training.fit import check_resume, fit, generation_totals, training_cost, training_parts
from distillab.training.on_policy import OnPolicy
from distillab.training.sharding import is_sharded, unsharded_copy
from distillab.training.students import build_student

log = logging.getLogger("distillab")


@app_boundary
def run(cfg: DictConfig) -> dict[str, Any]:
    app = AppRun(cfg)
    check_resume(cfg.get("ckpt_path"), app.run_dir)
    # Everything that can be wrong with the config fails here, before any minute is spent.
    objective = build_objective(to_plain(cfg.objective.terms))
    quantize_aware = fake_quant.from_config(to_plain(cfg.get("quantize_aware")))
    tuning_kind = tuning.from_config(to_plain(cfg.get("tuning")), quantize_aware)
    model, model_tok = load_from_config(cfg, "model")
    student, student_tok = build_student(
        model, to_plain(cfg.student), model_tok, calibration_for(cfg, model_tok)
    )
    teacher, tokenizer = load_teacher(cfg, model, model_tok)
    del model  # the teacher, or freed here when the run names another one
    cache_cfg = check_cache_config(objective.cache_readers(), to_plain(cfg.get("teacher_cache") or {}))
    aligner = pair_tokenizers(cfg, objective, teacher, student, tokenizer, student_tok)
    options = {"aligner": aligner, "on_policy": on_policy_config(cfg, objective), "student_tokenizer": student_tok}  # fmt: skip
    module, data = training_parts(cfg, student, teacher, objective, student_tok, cfg.paths, **options)
    shapes = log_shapes(teacher, student)
    app.open_loggers(objective_summary=module.objective_summary)
    app.results["objective_summary"] = module.objective_summary
    if rank_zero_only.rank == 0:  # Lightning re-runs this script for ranks > 0 (DDP/FSDP): rank 0 evaluates
        app.evaluate(teacher, tokenizer, "teacher", cached=True, timed=True)
        if cfg.get("eval_before_training"):  # cached too: the same cut is the start of many runs
            app.evaluate(student, student_tok, "student_before", cached=True)
    if objective.needs_cache:
        cache = prepare_teacher_cache(teacher, tokenizer, data, Path(cfg.paths.cache_dir), **cache_cfg)
        app.results["teacher_cache"] = str(cache)
    del teacher  # the module holds it if a term needs it: CE-only or cached-teacher runs free it here
    gc.collect()
    callbacks = list(instantiate(cfg.callbacks).values()) if cfg.get("callbacks") else []
    trainer, seconds = fit(
        module, data, cfg.trainer, app.run_dir, app.loggers, callbacks, cfg.get("ckpt_path"),
        compile=cfg.speed.compile, quantize_aware=quantize_aware, tuning=tuning_kind,
    )  # fmt: skip
    app.results |= {"train_seconds": seconds, "world_size": trainer.world_size, "quantize_aware": quantize_aware.format if quantize_aware else None, "tuning": tuning_kind.describe() if tuning_kind else None}  # fmt: skip
    app.results |= training_cost(trainer, module, cfg.data)
    if module.on_policy is not None:
        app.results["on_policy"] = generation_totals(trainer, module)
    if is_sharded(student):  # FSDP: gather the full student (every rank joins), rank 0 goes on with it
        student = unsharded_copy(student)
    if not trainer.is_global_zero:  # DDP: rank 0 alone evaluates, exports and writes results
        return {"run_dir": str(app.run_dir), "rank": trainer.global_rank}
    app.results["train_metrics"] = last_train_metrics(trainer, app.run_dir)
    app.export(student, student_tok)
    app.results["params"] = {"teacher": shapes[0], "student": student.num_parameters()}
    with fake_quant.as_stored(student, quantize_aware):  # scored as its file will hold it
        app.evaluate(student, student_tok, "student", timed=True)
    header = describe(cfg, shapes, student, app.results["params"]["student"], trainer.global_step, app.start)
    skip = per_token_tasks(cfg.get("eval"), aligner)
    return app.finish(header, trainer.global_step, skip, {"exported student": app.results.get("student_dir")})


def last_train_metrics(trainer, run_dir: Path) -> dict[str, float]:
    """The training and validation metrics logged last. Resuming a run that had already finished
    trains no step and logs nothing; its metrics are then those the finished run recorded (its
    ``results.json``, which only ``finish`` rewrites, so still the earlier one here)."""
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if metrics:
        return metrics
    try:  # none there, or unreadable: nothing to keep
        earlier = json.loads((run_dir / "results.json").read_text())
    except (OSError, ValueError):
        return {}
    return (earlier.get("train_metrics") or {}) if isinstance(earlier, dict) else {}


def describe(
    cfg: DictConfig, teacher_shape: tuple[int, int], student, student_params: int, steps: int, start: float
) -> str:
    params, layers = teacher_shape
    return (
        f"## {cfg.experiment_name}: teacher {layers} layers ({params / 1e6:.1f}M) vs student "
        f"{student.config.num_hidden_layers} layers ({student_params / 1e6:.1f}M), "
        f"{steps} steps, wall {(time.time() - start) / 60:.1f} min"
    )


def calibration_for(cfg: DictConfig, tokenizer):
    """Calibration batches for a student cut by a layer score, read from the training data."""

    def calibration(num_blocks: int) -> list:
        blocks = calibration_blocks(
            tokenizer, to_plain(cfg.data), num_blocks, cfg.paths.data_dir, cfg.paths.cache_dir,
            key="student.calibration_blocks",
        )  # fmt: skip
        return batches(blocks, 4)

    return calibration


def pair_tokenizers(
    cfg: DictConfig, objective, teacher, student, tokenizer, student_tok
) -> TokenAligner | None:
    """A teacher of another tokenizer reads its own tokenization of the student's text (cross_kd);
    same-position terms need one vocabulary."""
    if objective.cross_tokenizer:
        objective.attach_tokenizers(student_tok, tokenizer)
        check_cross_tokenizer_teacher(teacher, tokenizer, to_plain(cfg.trainer))
        return TokenAligner(student_tok, tokenizer)
    if objective.needs_teacher or objective.needs_cache:
        check_vocab_match(teacher, student, tokenizer, student_tok)
    return None


def log_shapes(teacher, student) -> tuple[int, int]:
    """Logs teacher and student sizes; returns the teacher's (parameters, layers)."""
    params, layers = teacher.num_parameters(), teacher.config.num_hidden_layers
    log.info(
        "teacher %d layers, %.1fM params -> student %d layers (layers %s of the model it was cut from), %.1fM params",
        layers,
        params / 1e6,
        student.config.num_hidden_layers,
        teacher_layer_indices(student),
        student.num_parameters() / 1e6,
    )
    return params, layers


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


main = hydra_app("distill", run)


if __name__ == "__main__":
    main()
