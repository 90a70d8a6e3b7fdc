"""What every app does around its own work, written once: the run folder (``entry.start_run``),
loggers with the resolved config, the reference model's cached evaluation, the student's, retention
with paired intervals, ``results.json`` + ``retention.md`` + per-item files, and the W&B run closed.

    app = AppRun(cfg)
    app.open_loggers()
    app.evaluate(teacher, tokenizer, "teacher", cached=True)
    ...                                     # the app's own work
    app.evaluate(student, tokenizer, "student")
    return app.finish(header, artifacts={"exported student": path})
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig

from distillab import cost, machine
from distillab.config import to_plain
from distillab.entry import start_run
from distillab.evaluation.footprint import bytes_on_disk
from distillab.evaluation.retention import primary_metrics, retention_results, retention_rows, with_before
from distillab.evaluation.suite import Evaluation, cached_evaluate_suite, evaluate_suite
from distillab.models.export import save_model_atomic
from distillab.precision import current as current_precision
from distillab.tracking import wandb_run
from distillab.tracking.report import write_results


class AppRun:
    def __init__(self, cfg: DictConfig):
        self.start = time.time()
        self.cfg = cfg
        self.run_dir = start_run(cfg)
        if cfg.get("seed") is not None:  # before any model is built or cut
            L.seed_everything(int(cfg.seed), workers=True)
        self.eval_cfg = cfg.get("eval")
        self.results: dict[str, Any] = {
            "run_dir": str(self.run_dir),
            "experiment": cfg.get("experiment_name"),
        }
        self.items: dict[str, Any] = {}  # per-item results of each evaluated model, saved under items/
        self.loggers: list = []
        self.eval_wall = 0.0  # seconds of evaluation that ran (not cache hits): the ledger's evaluate phase

    def open_loggers(self, **extra: Any) -> None:
        """The configured loggers (W&B offline unless told), given the config plus ``extra``."""
        self.loggers = wandb_run.make_loggers(self.cfg.get("logger"))
        wandb_run.log_config(self.loggers, {**to_plain(self.cfg), **extra})

    def export(self, model, tokenizer) -> None:
        """The model as an HF folder ``<run_dir>/student`` (unless ``export=false``), written atomically."""
        if self.cfg.get("export", True):
            folder = save_model_atomic(model, self.run_dir / "student", tokenizer)
            self.results |= {"student_dir": str(folder), "bytes": {"student": bytes_on_disk(folder)}}

    def evaluate(
        self,
        model,
        tokenizer,
        key: str,
        cached: bool = False,
        timed: bool = False,
        work_dir: Path | None = None,
    ) -> Evaluation | None:
        """The eval suite on ``model``, kept as ``results[key]`` / ``items[key]``. ``cached``: from
        the evaluation cache when the same model was scored before (teachers, un-trained cuts);
        ``timed``: its wall time goes to ``results["eval_seconds"][key]`` (unless a cache hit)."""
        if not self.eval_cfg:
            return None
        start, data_dir = time.time(), self.cfg.paths.data_dir
        folder = work_dir or self.run_dir
        with on_run_device(model):
            if cached:
                evaluation, hit = cached_evaluate_suite(
                    model, tokenizer, self.eval_cfg, folder, data_dir, Path(self.cfg.paths.cache_dir)
                )
            else:
                evaluation, hit = evaluate_suite(model, tokenizer, self.eval_cfg, folder, data_dir), False
        self.results[key], self.items[key] = evaluation.metrics, evaluation.items
        if not hit:  # every suite that ran: the cost ledger's evaluate phase
            self.eval_wall += time.time() - start
        if timed and not hit:  # what a suite costs on this machine
            self.results.setdefault("eval_seconds", {})[key] = time.time() - start
        return evaluation

    @contextlib.contextmanager
    def evaluating(self) -> Iterator[None]:
        """Evaluation outside :meth:`evaluate` (a GGUF file scored in llama.cpp): its seconds go to
        the cost ledger's evaluate phase, not to the cost of making the model."""
        start = time.time()
        try:
            yield
        finally:
            self.eval_wall += time.time() - start

    def against_teacher(self, key: str, skip_tasks: frozenset[str] = frozenset()) -> list:
        """Retention rows of the model evaluated as ``key`` against the teacher, on the same items."""
        return retention_rows(
            self.results["teacher"],
            self.results[key],
            self.results.get("student_before") if key == "student" else None,
            self.items.get("teacher"),
            self.items.get(key),
            primary_metrics(self.eval_cfg),
            skip_tasks=skip_tasks,
        )

    def finish(
        self,
        header: str,
        step: int = 0,
        skip_tasks: frozenset[str] = frozenset(),
        artifacts: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Retention of ``student`` vs ``teacher`` (``student_before`` shown next to it), logged,
        written and printed; closes the W&B run; returns the results."""
        rows = []
        if "teacher" in self.results and "student" in self.results:
            rows = self.against_teacher("student", skip_tasks)
            self.results |= retention_results(rows)
            if self.results.get("student_before"):  # the un-trained cut: its own retention and intervals
                before_rows = self.against_teacher("student_before", skip_tasks)
                self.results["before_training"] = retention_results(before_rows)
                rows = with_before(rows, before_rows)
        self.results["wall_seconds"] = time.time() - self.start
        self.results["cost"] = cost.ledger(
            self.results,
            self.eval_wall,
            machine.one_line(machine.describe_machine(current_precision().device_type)),
        )
        if self.eval_cfg:
            flat = wandb_run.summary_metrics(self.results)
            flat |= {f"before/{k}": v for k, v in (self.results.get("student_before") or {}).items()}
            before = wandb_run.summary_metrics(self.results.get("before_training") or {})
            flat |= {f"before/{k}": v for k, v in before.items()}  # before/retention/mean and intervals
            wandb_run.log_evaluation(self.loggers, flat, rows, step=step)
        text = write_results(self.run_dir, self.results, rows, header, self.items)
        if rows:
            print("\n" + text)
        elif self.results.get("student"):
            print("\n".join(f"{k}: {v:.4f}" for k, v in self.results["student"].items()))
        self.results["wandb_dir"] = wandb_run.finish(self.loggers)
        lines = [f"run directory: {self.run_dir}", *[f"{k}: {v}" for k, v in (artifacts or {}).items()]]
        if self.results["wandb_dir"]:
            lines.append(f"W&B files: {self.results['wandb_dir']} (sync with `wandb sync <dir>`)")
        print("\n".join(lines))
        return self.results


@contextlib.contextmanager
def on_run_device(model) -> Iterator[None]:
    """Evaluate where the run trains: a GPU training run's teacher is loaded on the CPU and
    Lightning hands the student back there after fit, so both move to the GPU for their evaluation
    (seconds there instead of many minutes on the host's cores) and back afterwards. Apps that do
    not train (evaluate, quantize: a quantized model may only run on the CPU), CPU runs, and models
    not wholly on the CPU (spread over devices, already on the GPU) stay where they are."""
    precision = current_precision()
    trains_on_cuda = precision.device_type == "cuda" and precision.train is not None
    on_cpu = isinstance(model, torch.nn.Module) and getattr(model, "hf_device_map", None) is None
    on_cpu = on_cpu and all(p.device.type == "cpu" for p in model.parameters())
    if not (trains_on_cuda and on_cpu and torch.cuda.is_available()):
        yield
        return
    model.to(torch.device("cuda", torch.cuda.current_device()))
    try:
        yield
    finally:
        model.to("cpu")
