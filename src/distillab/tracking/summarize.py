"""Collect the ``results.json`` of several runs (or a sweep directory) into one markdown table.

    python -m distillab.tracking.summarize outputs/distill/<experiment>/multirun-<time>

One row per run: its overrides (from Hydra's ``.hydra/overrides.yaml``), student metrics and their
retention versus the teacher. A fuller report (plots, Pareto front) is issue #5's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml


def find_runs(paths: list[Path]) -> list[Path]:
    found = []
    for path in paths:
        found += (
            [path]
            if (path / "results.json").is_file()
            else sorted(p.parent for p in path.glob("*/results.json"))
        )
    return found


def summary_table(runs: list[Path], metrics: list[str]) -> str:
    header = "| run | " + " | ".join(f"{m} | retention {m}" for m in metrics) + " |"
    lines = [header, "|" + "---|" * (1 + 2 * len(metrics))]
    for run in runs:
        results = json.loads((run / "results.json").read_text())
        overrides_file = run / ".hydra" / "overrides.yaml"
        label = (
            " ".join(yaml.safe_load(overrides_file.read_text()) or [])
            if overrides_file.is_file()
            else run.name
        )
        cells = []
        for m in metrics:
            value, ret = results.get("student", {}).get(m), results.get("retention", {}).get(m)
            cells += [
                "n/a" if value is None else f"{value:.4g}",
                "n/a" if ret is None else f"{100 * ret:.1f}%",
            ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    teacher = json.loads((runs[0] / "results.json").read_text()).get("teacher", {}) if runs else {}
    lines.append(
        "| teacher | " + " | ".join(f"{teacher.get(m, float('nan')):.4g} | 100%" for m in metrics) + " |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--metrics", nargs="+", default=["wikitext2/ppl", "arc_challenge/acc_norm"])
    args = parser.parse_args(argv)
    runs = find_runs(args.paths)
    if not runs:
        print(f"error: no results.json under {', '.join(map(str, args.paths))}", file=sys.stderr)
        raise SystemExit(2)
    print(summary_table(runs, args.metrics))


if __name__ == "__main__":
    main()
