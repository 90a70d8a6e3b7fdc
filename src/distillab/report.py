"""``distillab-report``: runs, sweeps and pipelines -> one markdown table, a Pareto plot, per-task bars;
or, with ``--a``/``--b``, whether run B is better than run A on the same items.

    distillab-report outputs/pipeline/default outputs/quantize/default/* --metrics wikitext2/ppl \\
        arc_easy/acc_norm --out reports/compression [--wandb compression_report]
    distillab-report --a outputs/distill/ce/<run> --b outputs/distill/kd/<run> [--metrics ...]
    distillab-report --a <seed runs of arm A ...> --b <seed runs of arm B ...>

Writes ``report.md`` (table + "which model for this size budget?"), ``pareto.png`` (mean
retention vs bytes on disk) and ``per_task.png`` into ``--out``; ``--wandb`` logs them as one run.
``--metrics`` defaults to the runs' primary metrics (one per task, see evaluation/retention.py).
With ``--a``/``--b`` it prints B − A per metric with a 95% paired-bootstrap interval and p-value
(tracking/run_diff.py) and writes ``compare.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from distillab.errors import DistillabError
from distillab.files import write_text_atomic
from distillab.tracking import run_diff
from distillab.tracking.compare import collect, default_metrics, markdown_report, pareto_front
from distillab.tracking.plots import pareto_plot, per_task_bars, percent_or_gap


def write_report(paths: list[Path], metrics: list[str] | None, out: Path) -> tuple[str, list[Path]]:
    entries = collect(paths)
    if not entries:
        raise SystemExit(f"error: no results.json or pipeline.json under {', '.join(map(str, paths))}")
    metrics = metrics or default_metrics(entries)
    out.mkdir(parents=True, exist_ok=True)
    text = markdown_report(entries, metrics)
    write_text_atomic(out / "report.md", text)
    front = [e.label for e in pareto_front(entries, metrics)]
    points = [
        (e.label, e.bytes / 1e6, 100 * e.mean_retention(metrics))
        for e in entries
        if e.bytes is not None and e.mean_retention(metrics) is not None
    ]
    images = [pareto_plot(points, front, out / "pareto.png")]
    retention = {m: [percent_or_gap(e.retention.get(m)) for e in entries] for m in metrics}
    intervals = {m: [e.interval.get(m) for e in entries] for m in metrics}
    images.append(per_task_bars([e.label for e in entries], retention, out / "per_task.png", intervals))
    return text, images


def log_to_wandb(text: str, images: list[Path], group: str, out: Path) -> str:
    import wandb

    run = wandb.init(
        dir=str(out),
        project="distillab",
        group=group,
        job_type="report",
        name=f"{group}-report",
        mode=os.environ.get("WANDB_MODE", "offline"),
    )
    run.log(
        {
            "report": wandb.Html(f"<pre>{text}</pre>"),
            **{f"plots/{i.stem}": wandb.Image(str(i)) for i in images},
        }
    )
    directory = run.dir
    run.finish()
    return directory


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, help="run, sweep or pipeline directories")
    parser.add_argument("--metrics", nargs="+", help="task/metric keys (default: the runs' primary metrics)")
    parser.add_argument(
        "--a",
        nargs="+",
        type=Path,
        metavar="RUN",
        help="run A (several: seeds of one arm; RUN:teacher, RUN:student_before)",
    )
    parser.add_argument("--b", nargs="+", type=Path, metavar="RUN", help="run B (several: seeds of one arm)")
    parser.add_argument("--out", type=Path, default=Path("outputs/reports/latest"))
    parser.add_argument(
        "--wandb", metavar="GROUP", help="log the report and plots as a W&B run in this group"
    )
    args = parser.parse_args(argv)
    if bool(args.a) != bool(args.b) or not (args.paths or args.a) or (args.a and args.paths):
        print(
            "error: give run directories to tabulate, or --a RUN... and --b RUN... to compare (not both)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    for side, runs in (("--a", args.a or []), ("--b", args.b or [])):
        bad = run_diff.check_arm(runs)
        if bad:
            print(f"error: {side}: {bad}", file=sys.stderr)
            raise SystemExit(2)
    runs = [*args.paths, *[run_diff.split_model(p)[0] for p in [*(args.a or []), *(args.b or [])]]]
    missing = [str(p) for p in runs if not p.exists()]
    if missing:
        print(
            f"error: paths: {', '.join(missing)} do not exist; give run, sweep or pipeline directories",
            file=sys.stderr,
        )
        raise SystemExit(2)
    if args.a:
        return compare(args.a, args.b, args.metrics, args.out)
    try:
        text, images = write_report(args.paths, args.metrics, args.out)
    except SystemExit as err:
        print(err, file=sys.stderr)
        raise SystemExit(2) from None
    print(text)
    print("\n".join(f"plot: {i}" for i in images))
    if args.wandb:
        print(f"W&B files: {log_to_wandb(text, images, args.wandb, args.out)}")


def compare(a_runs: list[Path], b_runs: list[Path], metrics: list[str] | None, out: Path) -> None:
    try:
        text = run_diff.markdown(run_diff.compare_runs(a_runs, b_runs, metrics), a_runs, b_runs)
    except DistillabError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    write_text_atomic(out / "compare.md", text)
    print(text + f"written: {out / 'compare.md'}")


if __name__ == "__main__":
    main()
