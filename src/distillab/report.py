"""``distillab-report``: runs, sweeps and pipelines -> one markdown table, a Pareto plot, per-task bars.

    distillab-report outputs/pipeline/default outputs/quantize/default/* --metrics wikitext2/ppl \\
        arc_easy/acc_norm --out reports/compression [--wandb compression_report]

Writes ``report.md`` (table + "which model for this size budget?"), ``pareto.png`` (mean
retention vs bytes on disk) and ``per_task.png`` into ``--out``; ``--wandb`` logs them as one run.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from distillab.tracking.compare import collect, markdown_report, pareto_front
from distillab.tracking.plots import pareto_plot, per_task_bars, percent_or_gap
from distillab.tracking.report import write_text_atomic


def write_report(paths: list[Path], metrics: list[str], out: Path) -> tuple[str, list[Path]]:
    entries = collect(paths)
    if not entries:
        raise SystemExit(f"error: no results.json or pipeline.json under {', '.join(map(str, paths))}")
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
    images.append(per_task_bars([e.label for e in entries], retention, out / "per_task.png"))
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
    parser.add_argument("paths", nargs="+", type=Path, help="run, sweep or pipeline directories")
    parser.add_argument("--metrics", nargs="+", default=["wikitext2/ppl", "arc_challenge/acc_norm"])
    parser.add_argument("--out", type=Path, default=Path("outputs/reports/latest"))
    parser.add_argument(
        "--wandb", metavar="GROUP", help="log the report and plots as a W&B run in this group"
    )
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        print(
            f"error: paths: {', '.join(missing)} do not exist; give run, sweep or pipeline directories",
            file=sys.stderr,
        )
        raise SystemExit(2)
    try:
        text, images = write_report(args.paths, args.metrics, args.out)
    except SystemExit as err:
        print(err, file=sys.stderr)
        raise SystemExit(2) from None
    print(text)
    print("\n".join(f"plot: {i}" for i in images))
    if args.wandb:
        print(f"W&B files: {log_to_wandb(text, images, args.wandb, args.out)}")


if __name__ == "__main__":
    main()
