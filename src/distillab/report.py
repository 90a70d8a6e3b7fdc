"""``distillab-report``: runs, sweeps and pipelines -> one markdown table with intervals, a Pareto
plot and per-task bars; or, with ``--a``/``--b``, whether run B is better than run A on the same items.

    distillab-report outputs/pipeline/default outputs/quantize/default/* --metrics wikitext2/ppl \\
        arc_easy/acc_norm --out reports/compression [--wandb compression_report]
    distillab-report outputs/distill/objectives_study/multirun-<time> --plot study.png
    distillab-report outputs/distill/budget_curve/steps_* --plot-tokens curve.png
    distillab-report outputs/prune/heal_recipes/* --plot-cost cost.png [--cost-axis seconds]
    distillab-report outputs/qad/* --scored-in llama.cpp   # the GGUF files as llama.cpp scores them
    distillab-report --a outputs/distill/ce/<run> --b outputs/distill/kd/<run> [--metrics ...]
    distillab-report --a <seed runs of arm A ...> --b <seed runs of arm B ...>

Writes ``report.md`` (table + "which model for this size budget?"), ``pareto.png`` (retention/mean
vs bytes on disk) and ``per_task.png`` into ``--out``; ``--plot``, ``--plot-params`` and
``--plot-tokens`` also save the per-task bars, retention/mean vs parameters and retention vs
training tokens where given; ``--plot-cost`` retention/mean vs each run's cost (``--cost-axis``:
counted training FLOPs or wall hours without evaluation, from the cost ledger) with its Pareto front;
a GGUF also scored in llama.cpp is a second entry ``<label> (llama.cpp)``, and ``--scored-in`` keeps
one runtime's entries; ``--wandb`` logs them as one run. Jobs of a sweep that failed are
listed first. ``--metrics`` (the columns) defaults to the runs' primary metrics; "retention/mean"
is always the mean each run recorded over its primary metrics. With ``--a``/``--b`` it prints
B − A per metric with a 95% paired-bootstrap interval and p-value (tracking/run_diff.py) and writes
``compare.md``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from distillab.errors import DistillabError
from distillab.files import write_text_atomic
from distillab.tracking import run_diff
from distillab.tracking.compare import (
    Entry,
    check_one_machine,
    collect,
    cost_of,
    default_metrics,
    markdown_report,
    pareto_front,
)
from distillab.tracking.plots import (
    pareto_plot,
    per_task_bars,
    percent_or_gap,
    retention_vs_params,
    retention_vs_tokens,
)
from distillab.tracking.runs import failure_table, find_failures


def write_report(entries: list[Entry], metrics: list[str], out: Path) -> tuple[str, list[Path]]:
    out.mkdir(parents=True, exist_ok=True)
    text = markdown_report(entries, metrics)
    write_text_atomic(out / "report.md", text)
    front = [e.label for e in pareto_front(entries)]
    points = [
        (e.label, e.bytes / 1e6, 100 * e.mean, e.mean_interval)
        for e in entries
        if e.bytes is not None and e.mean is not None
    ]
    images = [pareto_plot(points, front, out / "pareto.png")]
    retention = {m: [percent_or_gap(e.retention.get(m)) for e in entries] for m in metrics}
    intervals = {m: [e.interval.get(m) for e in entries] for m in metrics}
    images.append(per_task_bars([e.label for e in entries], retention, out / "per_task.png", intervals))
    return text, images


def extra_plots(entries: list[Entry], metrics: list[str], args, per_task: Path) -> list[Path]:
    """The plots asked for by path: the per-task bars again, retention/mean vs parameters, and
    retention per metric vs training tokens (a budget curve), each with its 95% intervals."""
    images = []
    if args.plot:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        images.append(Path(shutil.copyfile(per_task, args.plot)))
    if args.plot_params:
        points = [
            (e.label, e.params / 1e6, 100 * e.mean, e.mean_interval)
            for e in entries
            if e.params is not None and e.mean is not None
        ]
        images.append(retention_vs_params(points, args.plot_params))
    if args.plot_cost:
        scale = {"flops": 1e15, "seconds": 3600.0}[args.cost_axis]
        cost = {e.label: cost_of(e, args.cost_axis) for e in entries}
        points = [(e.label, cost[e.label] / scale, 100 * e.mean, e.mean_interval) for e in entries if cost[e.label] and e.mean is not None]  # fmt: skip
        front = [e.label for e in pareto_front(entries, size=lambda e: cost[e.label] or None)]
        unit = {"flops": "training PFLOPs (counted)", "seconds": "wall hours without evaluation"}[
            args.cost_axis
        ]
        images.append(pareto_plot(points, front, args.plot_cost, f"{unit}, log scale"))
    if args.plot_tokens:
        recipes = list(dict.fromkeys(e.recipe or "" for e in entries if e.tokens is not None))
        series = {
            (m, recipe): [
                (e.tokens, 100 * e.retention[m], e.interval.get(m))
                for e in entries
                if e.tokens is not None and e.retention.get(m) is not None and (e.recipe or "") == recipe
            ]
            for m in metrics
            for recipe in recipes
        }
        images.append(retention_vs_tokens({k: p for k, p in series.items() if p}, args.plot_tokens))
    return images


def table_rows(entries: list[Entry], metrics: list[str]) -> tuple[list[str], list[list]]:
    """The report as a W&B table: one row per model."""
    columns = ["model", "params", "bytes", *metrics, *[f"retention {m}" for m in metrics], "retention/mean"]
    rows = [
        [
            e.label,
            e.params,
            e.bytes,
            *[e.metrics.get(m) for m in metrics],
            *[e.retention.get(m) for m in metrics],
            e.mean,
        ]
        for e in entries
    ]
    return columns, rows


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    """The command line (the docs' command test parses every ``distillab-report`` line with it)."""
    parser = argparse.ArgumentParser(prog="distillab-report", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, help="run, sweep or pipeline directories")
    parser.add_argument(
        "--metrics", nargs="+", help="task/metric columns (default: the runs' primary metrics)"
    )
    parser.add_argument(
        "--a",
        nargs="+",
        type=Path,
        metavar="RUN",
        help="run A (several: seeds of one arm; RUN:teacher, RUN:student_before, RUN:student_llama_cpp)",
    )
    parser.add_argument("--b", nargs="+", type=Path, metavar="RUN", help="run B (several: seeds of one arm)")
    parser.add_argument("--out", type=Path, default=Path("outputs/reports/latest"))
    parser.add_argument("--plot", type=Path, help="also save the per-task retention bars (PNG) here")
    parser.add_argument("--plot-params", type=Path, help="also save retention/mean vs parameters (PNG) here")
    parser.add_argument("--plot-tokens", type=Path, help="also save retention vs training tokens (PNG) here")
    parser.add_argument(
        "--plot-cost",
        type=Path,
        help="also save retention/mean vs what each run cost, its Pareto front (PNG) here",
    )
    parser.add_argument(
        "--scored-in",
        choices=["all", "torch", "llama.cpp"],
        default="all",
        help="keep only models scored in this runtime (a GGUF scored in llama.cpp too is two entries)",
    )
    parser.add_argument(
        "--cost-axis",
        choices=["flops", "seconds"],
        default="flops",
        help="--plot-cost's x: counted training FLOPs, or wall seconds without evaluation (cost ledger)",
    )
    parser.add_argument(
        "--wandb", metavar="GROUP", help="log the report and plots as a W&B run in this group"
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    """A damaged or unfinished run folder is one ``error:`` line and exit status 2, whichever mode."""
    args = build_parser().parse_args(argv)
    try:
        report(args)
    except DistillabError as err:
        fail(str(err))


def report(args: argparse.Namespace) -> None:
    if bool(args.a) != bool(args.b) or not (args.paths or args.a) or (args.a and args.paths):
        fail("give run directories to tabulate, or --a RUN... and --b RUN... to compare (not both)")
    for side, runs in (("--a", args.a or []), ("--b", args.b or [])):
        bad = run_diff.check_arm(runs)
        if bad:
            fail(f"{side}: {bad}")
    runs = [*args.paths, *[run_diff.split_model(p)[0] for p in [*(args.a or []), *(args.b or [])]]]
    missing = [str(p) for p in runs if not p.exists()]
    if missing:
        fail(f"paths: {', '.join(missing)} do not exist; give run, sweep or pipeline directories")
    if args.a:
        return compare(args.a, args.b, args.metrics, args.out)
    failures = find_failures(args.paths)
    if failures:
        print(failure_table(failures) + "\n")
    entries = collect(args.paths)
    if args.scored_in != "all":
        entries = [e for e in entries if e.scored_in == args.scored_in]
    if not entries:
        fail(
            f"no results.json or pipeline.json under {', '.join(map(str, args.paths))} (--scored-in {args.scored_in})"
        )
    if args.plot_cost and args.cost_axis == "seconds":
        check_one_machine(entries)  # before anything is written
    metrics = args.metrics or default_metrics(entries)
    text, images = write_report(entries, metrics, args.out)
    images += extra_plots(entries, metrics, args, images[1])
    print(text)
    print("\n".join(f"plot: {i}" for i in images))
    if args.wandb:
        from distillab.tracking.wandb_run import log_report

        directory = log_report(args.wandb, args.out, text, images, table_rows(entries, metrics))
        print(f"W&B files: {directory}")


def compare(a_runs: list[Path], b_runs: list[Path], metrics: list[str] | None, out: Path) -> None:
    diffs = run_diff.compare_runs(a_runs, b_runs, metrics)
    mean = run_diff.compare_retention_mean(a_runs, b_runs)
    text = run_diff.markdown(diffs, a_runs, b_runs, mean)
    write_text_atomic(out / "compare.md", text)
    print(text + f"written: {out / 'compare.md'}")


if __name__ == "__main__":
    main()
