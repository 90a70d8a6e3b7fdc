"""Finished runs on disk: which folders hold one, which jobs of a sweep failed, and the label that
tells each run apart (its Hydra overrides, minus those every run shares)."""

from __future__ import annotations

from pathlib import Path

import yaml

from distillab.files import read_json
from distillab.markdown import table


def find_runs(paths: list[Path]) -> list[Path]:
    """Run folders (with ``results.json``) among ``paths`` and their direct subfolders (sweep jobs)."""
    found = []
    for path in paths:
        found += (
            [path]
            if (path / "results.json").is_file()
            else sorted(p.parent for p in path.glob("*/results.json"))
        )
    return found


def find_failures(paths: list[Path]) -> list[tuple[Path, dict]]:
    """Jobs that failed (their ``failure.json``, written by a multirun job that raised)."""
    found = []
    for path in paths:
        for marker in (
            [path / "failure.json"]
            if (path / "failure.json").is_file()
            else sorted(path.glob("*/failure.json"))
        ):
            found.append((marker.parent, read_json(marker, "re-run that job")))
    return found


def failure_table(failures: list[tuple[Path, dict]]) -> str:
    return table(
        ["failed job", "error"],
        [[f"{job.name}: FAILED", f"{f['error']}: {f['message']}"] for job, f in failures],
    )


def _hydra_file(run: Path, name: str):
    """A file Hydra saved in the run's ``.hydra/`` folder, parsed; None when absent."""
    path = run / ".hydra" / name
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def _overrides(run: Path) -> list[str]:
    return list(_hydra_file(run, "overrides.yaml") or [])


def _named(run: Path) -> bool:
    """Was the run's folder given on the command line? Hydra keeps its own overrides apart from the
    task's (``.hydra/hydra.yaml``, ``hydra.overrides.hydra``)."""
    overrides = ((_hydra_file(run, "hydra.yaml") or {}).get("hydra") or {}).get("overrides") or {}
    return any(str(o).startswith("hydra.run.dir=") for o in overrides.get("hydra") or [])


# Overrides that name, place or resume a run rather than change what it computes: never part of a label.
_BOOKKEEPING = (
    "experiment_name=", "eval_before_training=", "paths.", "hydra.", "threads=", "ckpt_path=",
    "logger=", "export=", "trainer.log_every_n_steps=", "callbacks.checkpoint.", "trainer.limit_val_batches=",
    "trainer.val_check_interval=",  # when the validation loss is logged: never the weights
)  # fmt: skip


def run_labels(runs: list[Path]) -> list[str]:
    """Per run, the Hydra overrides that tell it apart (those shared by every run are dropped); a run
    whose folder was named on the command line (``hydra.run.dir=…``, a study's arm) goes by that name."""
    overrides = [[o for o in _overrides(run) if not o.startswith(_BOOKKEEPING)] for run in runs]
    shared = set.intersection(*(set(o) for o in overrides)) if len(runs) > 1 else set()
    labels = [
        run.name if _named(run) else " ".join(o for o in own if o not in shared) or run.name
        for run, own in zip(runs, overrides, strict=True)
    ]
    # Runs that differ only in bookkeeping would share a label: their folder names tell them apart.
    repeated = {label for label in labels if labels.count(label) > 1}
    return [
        f"{label} ({run.name})" if label in repeated and label != run.name else label
        for run, label in zip(runs, labels, strict=True)
    ]
