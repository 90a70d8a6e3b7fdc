"""The pipeline's size x quality table: one row per stage, retention against the original teacher."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from distillab.evaluation.items import read_suite
from distillab.evaluation.retention import format_cell, retention_results, retention_rows
from distillab.files import write_json_atomic, write_text_atomic
from distillab.markdown import table
from distillab.tracking import wandb_run


def stage_items(record: dict[str, Any]):
    """A stage's per-item results as its app wrote them (None for records from before they existed)."""
    folder = record.get("items_dir")
    return read_suite(Path(folder)) if folder else None


def stage_run(record: dict[str, Any]) -> str | None:
    """``<stage folder>:<model>`` (``distillab-report --a/--b``'s ``RUN:model``): where the row's
    per-item results are, so a report pairs it with other runs on the same items."""
    folder = record.get("items_dir")
    return f"{Path(folder).parent.parent}:{Path(folder).name}" if folder else None


def stage_row(
    record: dict[str, Any], teacher: dict[str, Any], primary: dict[str, str], teacher_items=None
) -> dict[str, Any]:
    """One stage against the original teacher; ``mean_retention`` over ``primary`` (task -> metric),
    with intervals where both the stage's and the teacher's per-item results are on disk."""
    is_teacher = record is teacher  # the reference row: 100% by definition, no interval to draw
    rows = retention_rows(
        teacher["metrics"],
        record["metrics"],
        None,
        stage_items(teacher) if teacher_items is None else teacher_items,
        None if is_teacher else stage_items(record),
        primary,
    )
    summary = retention_results(rows)
    mean = summary["retention_mean"]
    return {
        "stage": record["name"],
        "params": record["params"],
        "bytes": record["bytes"],
        "tokens_per_s": record["tokens_per_s"],
        "runtime": record["runtime"],
        "scored_in": record.get("scored_in", "torch"),  # torch (de-quantized for a GGUF) | llama.cpp
        "metrics": {r.key: r.student for r in rows},
        "retention": summary["retention"],
        "retention_interval": summary["retention_interval"],
        "primary": summary["primary"],
        "mean_retention": None if mean is None else mean["value"],
        "mean_retention_interval": None if mean is None else [mean["low"], mean["high"]],
        "output": record["output"],
        "run": None if is_teacher else stage_run(record),
        "cost": record.get("cost"),  # what the row's model cost: the stages up to it (pipeline.py)
    }


def _mb(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 1e6:.1f} MB"


def markdown(rows: list[dict[str, Any]]) -> str:
    """Size x quality per stage; retention with its 95% paired interval where per-item results exist."""
    keys = sorted({k for r in rows for k in r["metrics"]})
    head = ["stage", "params", "bytes on disk", "decode tok/s", *keys, "retention/mean"]
    cells = []
    for r in rows:
        intervals = r.get("retention_interval") or {}
        cells.append([
            r["stage"],
            f"{r['params'] / 1e6:.1f}M",
            _mb(r["bytes"]),
            f"{r['tokens_per_s']:.1f}",
            *[format_cell(r["metrics"].get(k), r["retention"].get(k), intervals.get(k)) for k in keys],
            format_cell(None, r["mean_retention"], r.get("mean_retention_interval")),
        ])  # fmt: skip
    runtimes = sorted({f"{r['stage']}: {r['runtime']}" for r in rows})
    note = (
        "\n\nretention/mean: mean over the tasks' primary metrics; [low, high]: 95% paired-bootstrap interval"
    )
    return table(head, cells) + note + "\n\nSpeed measured in: " + "; ".join(runtimes) + "\n"


def write_stage_table(run_dir: Path, rows: list[dict[str, Any]], header: str) -> str:
    """``pipeline.json`` + ``pipeline.md`` in ``run_dir`` (atomic); returns the markdown."""
    write_json_atomic(run_dir / "pipeline.json", rows)
    text = f"{header}\n\n{markdown(rows)}"
    write_text_atomic(run_dir / "pipeline.md", text)
    return text


def log_stage_table(cfg: DictConfig, rows: list[dict[str, Any]], run_dir: Path) -> None:
    """The table as one W&B run (job type ``pipeline``) in the experiment's group; no-op without W&B."""
    loggers = wandb_run.make_loggers(cfg.get("logger"))
    wandb_logger = wandb_run.find_wandb(loggers)
    if wandb_logger is not None:
        import wandb

        keys = sorted({k for r in rows for k in r["metrics"]})
        table = wandb.Table(
            columns=["stage", "params", "bytes", "tokens_per_s", *keys, *[f"retention/{k}" for k in keys]]
        )
        for r in rows:
            table.add_data(
                r["stage"],
                r["params"],
                r["bytes"],
                r["tokens_per_s"],
                *[r["metrics"].get(k) for k in keys],
                *[r["retention"].get(k) for k in keys],
            )
        run = wandb_logger.experiment
        run.log({"stage_table": table})
        run.summary.update(
            {f"{r['stage']}/{m}": r[m] for r in rows for m in ("params", "bytes", "mean_retention")}
        )
    for lg in loggers:
        lg.save()
    wandb_run.finish(loggers)
