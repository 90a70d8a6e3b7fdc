"""Collect the ``results.json`` of several runs (or a sweep directory) into one markdown table.

    python -m distillab.tracking.summarize outputs/distill/<experiment>/multirun-<time>

One row per run: its overrides (from Hydra's ``.hydra/overrides.yaml``), student metrics and their
retention versus the teacher. ``--plot`` / ``--plot-params`` save PNGs (retention per run; mean
retention vs parameters) and ``--wandb GROUP`` logs the table and plots as one W&B run of the group.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from distillab.evaluation.retention import format_retention
from distillab.tracking.plots import per_task_bars, percent_or_gap, retention_vs_tokens


def find_runs(paths: list[Path]) -> list[Path]:
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
        candidates = [path] if (path / "failure.json").is_file() else sorted(path.glob("*/failure.json"))
        for c in candidates:
            job = c if c.is_dir() else c.parent
            found.append((job, json.loads((job / "failure.json").read_text())))
    return found


def failure_lines(failures: list[tuple[Path, dict]]) -> list[str]:
    return [f"| {job.name}: FAILED | {f['error']}: {f['message']} |" for job, f in failures]


def _overrides(run: Path) -> list[str]:
    overrides_file = run / ".hydra" / "overrides.yaml"
    return list(yaml.safe_load(overrides_file.read_text()) or []) if overrides_file.is_file() else []


# Overrides that name or place a run rather than change what it computes: never part of a label.
_BOOKKEEPING = ("experiment_name=", "eval_before_training=", "paths.", "hydra.", "threads=")


def run_labels(runs: list[Path]) -> list[str]:
    """Per run, the Hydra overrides that tell it apart (those shared by every run are dropped)."""
    overrides = [[o for o in _overrides(run) if not o.startswith(_BOOKKEEPING)] for run in runs]
    shared = set.intersection(*(set(o) for o in overrides)) if len(runs) > 1 else set()
    return [
        " ".join(o for o in own if o not in shared) or run.name
        for run, own in zip(runs, overrides, strict=True)
    ]


def summary_table(runs: list[Path], metrics: list[str]) -> str:
    """One row per run: each metric and its retention; with several metrics, their mean retention."""
    with_mean = len(metrics) > 1
    header = (
        "| run | "
        + " | ".join(f"{m} | retention {m}" for m in metrics)
        + (" | mean retention |" if with_mean else " |")
    )
    lines = [header, "|" + "---|" * (1 + 2 * len(metrics) + with_mean)]
    for run, label in zip(runs, run_labels(runs), strict=True):
        results = json.loads((run / "results.json").read_text())
        cells = []
        for m in metrics:
            value, ret = results.get("student", {}).get(m), results.get("retention", {}).get(m)
            low, high = (results.get("retention_interval") or {}).get(m, (None, None))
            cells += [
                "n/a" if value is None else f"{value:.4g}",
                "n/a" if ret is None else format_retention(ret, low, high),
            ]
        if with_mean:
            mean = mean_retention(results, metrics)
            cells.append("n/a" if mean is None else f"{100 * mean:.1f}%")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    teacher = json.loads((runs[0] / "results.json").read_text()).get("teacher", {}) if runs else {}
    lines.append(
        "| teacher | "
        + " | ".join(f"{teacher.get(m, float('nan')):.4g} | 100%" for m in metrics)
        + (" | 100% |" if with_mean else " |")
    )
    return "\n".join(lines)


def plot_retention(runs: list[Path], metrics: list[str], out: Path) -> None:
    """Grouped bars: retention vs the teacher (%) per run, one bar per metric; saved as PNG."""
    results = [json.loads((run / "results.json").read_text()) for run in runs]
    retention = [r.get("retention", {}) for r in results]
    intervals = [r.get("retention_interval") or {} for r in results]
    per_task_bars(
        run_labels(runs),
        {m: [percent_or_gap(r.get(m)) for r in retention] for m in metrics},
        out,
        {m: [iv.get(m) for iv in intervals] for m in metrics},
    )


def plot_retention_vs_tokens(runs: list[Path], metrics: list[str], out: Path) -> None:
    """Retention per metric (with its interval) against each run's ``train_tokens``: a budget curve."""
    series: dict[str, list] = {m: [] for m in metrics}
    for run in runs:
        results = json.loads((run / "results.json").read_text())
        tokens = results.get("train_tokens")
        if not tokens:
            continue
        for m in metrics:
            ret = results.get("retention", {}).get(m)
            if ret is None:
                continue
            series[m].append((tokens, 100 * ret, (results.get("retention_interval") or {}).get(m)))
    retention_vs_tokens({m: p for m, p in series.items() if p}, out)


def mean_retention(results: dict, metrics: list[str]) -> float | None:
    values = [results.get("retention", {}).get(m) for m in metrics]
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def plot_retention_vs_params(runs: list[Path], metrics: list[str], out: Path) -> None:
    """Mean retention over ``metrics`` (%) against student parameters, one labelled point per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for run, label in zip(runs, run_labels(runs), strict=True):
        results = json.loads((run / "results.json").read_text())
        params, mean = results.get("params", {}).get("student"), mean_retention(results, metrics)
        if params is None or mean is None:
            continue
        ax.scatter(params / 1e6, 100 * mean)
        ax.annotate(label, (params / 1e6, 100 * mean), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("student parameters (M)")
    ax.set_ylabel(f"mean retention over {len(metrics)} metrics (%)")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")  # room for long run labels
    plt.close(fig)


def log_to_wandb(runs: list[Path], metrics: list[str], group: str, images: list[Path]) -> str:
    """One W&B run (job_type ``summary``) in ``group``: the table and the plots. Offline unless WANDB_MODE says."""
    import os

    import wandb

    out_dir = Path("outputs") / "summaries"  # next to the runs, not in the repo root
    out_dir.mkdir(parents=True, exist_ok=True)
    run = wandb.init(
        dir=str(out_dir),
        project="distillab",
        group=group,
        job_type="summary",
        name=f"{group}-summary",
        mode=os.environ.get("WANDB_MODE", "offline"),
    )
    table = wandb.Table(columns=["run", "params", *metrics, *[f"retention {m}" for m in metrics]])
    for path, label in zip(runs, run_labels(runs), strict=True):
        results = json.loads((path / "results.json").read_text())
        student, retention = results.get("student", {}), results.get("retention", {})
        table.add_data(
            label,
            results.get("params", {}).get("student"),
            *[student.get(m) for m in metrics],
            *[retention.get(m) for m in metrics],
        )
    run.log({"summary_table": table, **{f"plots/{img.stem}": wandb.Image(str(img)) for img in images}})
    directory = run.dir
    run.finish()
    return directory


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--metrics", nargs="+", default=["wikitext2/ppl", "arc_challenge/acc_norm"])
    parser.add_argument("--plot", type=Path, help="also save a retention bar chart (PNG) here")
    parser.add_argument("--plot-params", type=Path, help="also save mean retention vs parameters (PNG) here")
    parser.add_argument("--plot-tokens", type=Path, help="also save retention vs training tokens (PNG) here")
    parser.add_argument("--wandb", metavar="GROUP", help="log the table and plots as a W&B run in this group")
    args = parser.parse_args(argv)
    runs = find_runs(args.paths)
    failures = find_failures(args.paths)
    if failures:
        print("\n".join(["| failed job | error |", "|---|---|", *failure_lines(failures)]) + "\n")
    if not runs:
        print(f"error: no results.json under {', '.join(map(str, args.paths))}", file=sys.stderr)
        raise SystemExit(2)
    print(summary_table(runs, args.metrics))
    images = []
    if args.plot:
        plot_retention(runs, args.metrics, args.plot)
        images.append(args.plot)
    if args.plot_params:
        plot_retention_vs_params(runs, args.metrics, args.plot_params)
        images.append(args.plot_params)
    if args.plot_tokens:
        plot_retention_vs_tokens(runs, args.metrics, args.plot_tokens)
        images.append(args.plot_tokens)
    for image in images:
        print(f"plot: {image}")
    if args.wandb:
        print(f"W&B files: {log_to_wandb(runs, args.metrics, args.wandb, images)}")


if __name__ == "__main__":
    main()
