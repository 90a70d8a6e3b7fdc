"""Hydra multiruns: the value a sweeper optimises, each failed job's ``failure.json``, and the
callback that lists the failures and exits non-zero once every job has run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from distillab.errors import DistillabError
from distillab.files import read_json, write_json_atomic


def sweep_value(results: dict[str, Any] | None, metric: str | None) -> float | None:
    """What an app returns to Hydra's sweeper (Optuna maximises / minimises it).

    ``retention/mean``: mean retention over the eval suite; ``retention/<task>/<metric>``,
    ``eval/<task>/<metric>`` (the student's value), ``train/<key>`` (a final training metric).
    """
    if not results or not metric or "rank" in results:  # ranks > 0 of DDP/FSDP report nothing
        return None
    kind, _, key = metric.partition("/")
    retention = {k: v for k, v in (results.get("retention") or {}).items() if v is not None}
    if metric == "retention/mean":  # over each task's primary metric (evaluation/retention.py)
        mean = results.get("retention_mean")
        return None if mean is None else mean["value"]
    source = {
        "retention": retention,
        "eval": results.get("student") or {},
        "train": results.get("train_metrics") or {},
    }
    if kind not in source:
        raise DistillabError(
            f"sweep_metric: {metric!r}; valid: retention/mean, retention/<task>/<metric>, eval/..., train/..."
        )
    value = source[kind].get(metric if kind in ("train", "val") else key)
    if value is None:
        raise DistillabError(
            f"sweep_metric: {metric!r} was not measured; measured: {', '.join(sorted(source[kind]))}"
        )
    return float(value)


def job_dir_in_multirun() -> Path | None:
    """The job's output directory when running as one job of a Hydra multirun, else None."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra_cfg = HydraConfig.get()
    except (ImportError, ValueError):
        return None
    return Path(hydra_cfg.runtime.output_dir) if hydra_cfg.mode == RunMode.MULTIRUN else None


def record_failure(job_dir: Path, err: BaseException) -> None:
    """``failure.json`` in the job's directory: what the sweep summary reports for a failed job."""

    message = (str(err).strip().splitlines() or [""])[0]
    write_json_atomic(job_dir / "failure.json", {"error": type(err).__name__, "message": message})


def sweep_failures(sweep_dir: Path) -> list[dict[str, Any]]:
    return [
        {"job": path.parent.name, **read_json(path, "re-run the sweep")}
        for path in sorted(sweep_dir.glob("*/failure.json"), key=lambda p: p.parent.name)
    ]


class FailureReport(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        failures = sweep_failures(sweep_dir)
        if not failures:
            return
        write_json_atomic(sweep_dir / "failures.json", failures)
        for f in failures:
            print(f"error: sweep job {f['job']} failed: {f['error']}: {f['message']}", file=sys.stderr)
        sys.exit(1)
