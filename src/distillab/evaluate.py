"""``distillab-evaluate``: the eval suite on one model, and retention against a teacher if given."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from distillab.config import to_plain
from distillab.entry import hydra_app, start_run
from distillab.evaluation.retention import primary_metrics, retention_results, retention_rows
from distillab.evaluation.suite import cached_evaluate_suite
from distillab.models.loading import count_parameters, load_model
from distillab.models.spec import ModelSpec
from distillab.tracking import wandb_run
from distillab.tracking.report import write_results


def run(cfg: DictConfig) -> dict[str, Any]:
    run_dir = start_run(cfg)
    cache = Path(cfg.paths.cache_dir)
    model, tokenizer = load_model(ModelSpec.from_config(to_plain(cfg.model)))
    teacher = None
    if cfg.get("teacher"):
        teacher, teacher_tok = load_model(
            ModelSpec.from_config(to_plain(cfg.teacher), key="teacher"), key="teacher"
        )
    loggers = wandb_run.make_loggers(cfg.get("logger"))
    wandb_run.log_config(loggers, to_plain(cfg))
    results: dict[str, Any] = {"model": cfg.model.name_or_path, "params": count_parameters(model)}
    student_eval, _ = cached_evaluate_suite(model, tokenizer, cfg.eval, run_dir, cfg.paths.data_dir, cache)
    results["student"], items = student_eval.metrics, {"student": student_eval.items}
    rows = []
    if teacher is not None:
        teacher_eval, _ = cached_evaluate_suite(
            teacher, teacher_tok, cfg.eval, run_dir, cfg.paths.data_dir, cache
        )
        results["teacher"], items["teacher"] = teacher_eval.metrics, teacher_eval.items
        rows = retention_rows(
            results["teacher"],
            results["student"],
            teacher_items=teacher_eval.items,
            student_items=student_eval.items,
            primary=primary_metrics(cfg.eval),
        )
        results |= retention_results(rows)
    flat = wandb_run.summary_metrics({**results, "params": {"student": results["params"]}})
    wandb_run.log_evaluation(loggers, flat, rows, step=0)
    if rows:
        print(
            "\n"
            + write_results(
                run_dir, results, rows, f"## {cfg.model.name_or_path} vs {cfg.teacher.name_or_path}", items
            )
        )
    else:
        write_results(run_dir, results, rows, "", items)
        print("\n".join(f"{k}: {v:.4f}" for k, v in results["student"].items()))
    wandb_run.finish(loggers)
    print(f"run directory: {run_dir}")
    return results


main = hydra_app("evaluate", run)


if __name__ == "__main__":
    main()
