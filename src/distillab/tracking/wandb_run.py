"""Weights & Biases through Lightning's WandbLogger: one run per job, offline unless told otherwise."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from omegaconf import OmegaConf

from distillab import machine
from distillab.evaluation.retention import RetentionRow
from distillab.files import keep_earlier_csv
from distillab.precision import current as current_precision
from distillab.redaction import redact
from distillab.versions import code_line, code_revision

log = logging.getLogger(__name__)


def find_wandb(loggers: list[Logger]) -> WandbLogger | None:
    return next((lg for lg in loggers if isinstance(lg, WandbLogger)), None)


def _start(lg: WandbLogger) -> None:
    """Start the W&B run now (where a failure can be handled). W&B records the command line in the
    run's metadata, so it sees the arguments with secret-looking values redacted."""
    argv = sys.argv
    sys.argv = [redact(a) for a in argv]
    try:
        lg.experiment  # noqa: B018
    finally:
        sys.argv = argv


def run_name(default: str) -> str:
    """The W&B run's display name: a study arm's name (``experiment=<study>/<arm>``), else, in a
    sweep, the job's own overrides (``objective=kd,seed=1``), else ``default`` (``experiment_name``):
    the runs of one group are told apart in a dashboard's legend and run comparer."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():  # composed in code (tests, notebooks): the default
        return default
    hydra_cfg = HydraConfig.get()
    arm = hydra_cfg.runtime.choices.get("experiment")
    if arm:
        return arm
    if hydra_cfg.mode == RunMode.MULTIRUN and hydra_cfg.job.override_dirname:
        return hydra_cfg.job.override_dirname
    return default


def make_loggers(logger_cfg) -> list[Logger]:
    """Instantiate the configured loggers. A W&B run that cannot start online (no network, no API
    key, server down) falls back to offline with one warning: tracking never blocks or kills a run."""
    if not logger_cfg:
        return []
    os.environ.setdefault("WANDB_INIT_TIMEOUT", "30")  # seconds; wandb's default waits 90
    loggers = []
    for node in logger_cfg.values():
        spec = OmegaConf.to_container(node, resolve=True)
        if OmegaConf.to_container(node, resolve=False).get("name") == "${experiment_name}":  # not set by hand
            spec["name"] = run_name(spec["name"])
        lg = instantiate(OmegaConf.create(spec))
        if isinstance(lg, WandbLogger):
            try:
                _start(lg)
            except Exception as err:  # wandb raises many types (UsageError, CommError, timeouts)
                first = (str(err).strip().splitlines() or [type(err).__name__])[0]
                log.warning("W&B could not start online (%s); logging offline instead", first[:200])
                lg = instantiate(OmegaConf.create({**spec, "mode": "offline"}))
                _start(lg)
        if isinstance(lg, CSVLogger):
            keep_earlier_csv(Path(lg.log_dir))
        loggers.append(lg)
    return loggers


def log_config(loggers: list[Logger], config: dict[str, Any]) -> None:
    """The run's config, secrets redacted, with the precision it resolved to (not just ``auto``), the
    machine (CSV's hparams.yaml has no system panel like W&B's) and the code's commit."""
    used = current_precision()
    config = {
        **redact(config),
        "precision": used.name,
        "precision_train": used.train,
        "precision_reason": used.reason,
        "machine": machine.one_line(machine.describe_machine(used.device_type)),
        "code": code_line(code_revision()),
    }
    for lg in loggers:
        lg.log_hyperparams(config)


def log_evaluation(
    loggers: list[Logger], metrics: dict[str, float], rows: list[RetentionRow], step: int
) -> None:
    """Eval metrics to every logger; retention table and summary keys to W&B."""
    for lg in loggers:
        lg.log_metrics(metrics, step=step)
        lg.save()
    wandb_logger = find_wandb(loggers)
    if wandb_logger is None:
        return
    import wandb

    table = wandb.Table(
        columns=[
            "task/metric",
            "primary",
            "items",
            "teacher",
            "student_before",
            "student",
            "retention_before",
            "retention",
            "retention_low",
            "retention_high",
        ]
    )
    for r in rows:
        table.add_data(
            r.key,
            r.primary,
            r.items,
            r.teacher,
            r.before,
            r.student,
            r.retention_before,
            r.retention,
            r.low,
            r.high,
        )
    run = wandb_logger.experiment
    run.log({"retention_table": table})
    run.summary.update(metrics)


def log_images(loggers: list[Logger], images: dict[str, Path]) -> None:
    """PNG files (plots) into the W&B run, keyed by name."""
    wandb_logger = find_wandb(loggers)
    if wandb_logger is None or not images:
        return
    import wandb

    wandb_logger.experiment.log({f"plots/{k}": wandb.Image(str(v)) for k, v in images.items()})


def finish(loggers: list[Logger]) -> str | None:
    """Close the W&B run (so the next job of a sweep gets its own) and return its local directory."""
    wandb_logger = find_wandb(loggers)
    if wandb_logger is None:
        return None
    import wandb

    run_dir = wandb.run.dir if wandb.run is not None else None
    wandb.finish()
    return run_dir


def summary_metrics(results: dict[str, Any]) -> dict[str, float]:
    """The summary keys every app logs, so one W&B workspace compares any runs without custom code
    (``distillab-dashboard`` builds one from them): ``eval/<task/metric>``, ``teacher/<task/metric>``,
    ``retention/<task/metric>``, ``retention/mean``, ``size/params``, ``size/bytes`` (the exported
    model on disk), ``speed/decode_tokens_per_s``, and what training cost: ``cost/train_tokens`` (a
    budget curve's x axis), ``cost/train_seconds``, and the cost ledger (cost.py):
    ``cost/flops_{student_forward,student_backward,teacher_forward,total}`` and
    ``cost/wall_{train,evaluate,other,total}_seconds``."""
    flat = {f"eval/{k}": v for k, v in (results.get("student") or {}).items()}
    flat |= {f"teacher/{k}": v for k, v in (results.get("teacher") or {}).items()}
    retention = {k: v for k, v in (results.get("retention") or {}).items() if v is not None}
    flat |= {f"retention/{k}": v for k, v in retention.items()}
    flat |= {f"retention_low/{k}": lo for k, (lo, _) in (results.get("retention_interval") or {}).items()}
    flat |= {f"retention_high/{k}": hi for k, (_, hi) in (results.get("retention_interval") or {}).items()}
    if (mean := results.get("retention_mean")) is not None:  # over each task's primary metric
        flat["retention/mean"] = mean["value"]
        if mean["low"] is not None:
            flat |= {"retention_low/mean": mean["low"], "retention_high/mean": mean["high"]}
    if (params := results.get("params", {}).get("student")) is not None:
        flat["size/params"] = params
    if (size := (results.get("bytes") or {}).get("student")) is not None:
        flat["size/bytes"] = size
    if results.get("tokens_per_s") is not None:
        flat["speed/decode_tokens_per_s"] = results["tokens_per_s"]
    if results.get("train_tokens") is not None:
        flat["cost/train_tokens"] = results["train_tokens"]
    if results.get("train_seconds") is not None:
        flat["cost/train_seconds"] = results["train_seconds"]
    ledger = results.get("cost") or {}
    flat |= {f"cost/flops_{k}": v for k, v in (ledger.get("flops") or {}).items()}
    flat |= {f"cost/wall_{k}_seconds": v for k, v in (ledger.get("wall_seconds") or {}).items()}
    return flat


def log_report(
    group: str, out: Path, text: str, images: list[Path], table: tuple[list, list] | None = None
) -> str:
    """One W&B run (job_type ``report``) in ``group`` holding a report: its markdown, its plots and
    optionally a table ``(columns, rows)``. Offline unless ``WANDB_MODE`` says otherwise; the
    command line it records is redacted like every run's. Returns the run's local directory."""
    import wandb

    argv = sys.argv
    sys.argv = [redact(a) for a in argv]
    try:
        run = wandb.init(
            dir=str(out),
            project="distillab",
            group=group,
            job_type="report",
            name=f"{group}-report",
            mode=os.environ.get("WANDB_MODE", "offline"),
        )
    finally:
        sys.argv = argv
    payload: dict[str, Any] = {
        "report": wandb.Html(f"<pre>{text}</pre>"),
        **{f"plots/{i.stem}": wandb.Image(str(i)) for i in images},
    }
    if table is not None:
        payload["report_table"] = wandb.Table(columns=table[0], data=table[1])
    run.log(payload)
    directory = run.dir
    run.finish()
    return directory
