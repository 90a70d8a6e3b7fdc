"""``distillab-dashboard``: the W&B comparison views of a study, made from code.

    distillab-dashboard claims --eval decision_cpu             # writes the specs, says how to push them
    distillab-dashboard claims --eval decision_cpu --save      # pushes them (updates the earlier ones)
    distillab-dashboard claims larger_teacher --tasks arc_easy wikitext2

GROUP is a W&B run group: the ``experiment_name`` of the runs (every app's W&B group). One
Workspace view and one Report (``tracking/dashboard.py``): retention/mean against bytes on disk,
retention per task (each task's primary metric, from the task registry), retention against training
tokens, the training curves, the runs' retention tables and a run comparer. Without ``--save`` it
writes ``workspace.json`` and ``report.json`` to ``--out``; with it, it pushes both to
``--entity``/``--project`` (or ``WANDB_ENTITY``/``WANDB_PROJECT``) on the W&B server of
``WANDB_BASE_URL``, replacing the views an earlier save made.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from distillab.errors import DistillabError
from distillab.tracking.dashboard import Dashboard, save, write_specs


def logger_project() -> str:
    """The W&B project the runs log to (``conf/logger/wandb.yaml``): where their views belong."""
    from omegaconf import OmegaConf

    from distillab.config import CONFIG_DIR

    return str(OmegaConf.load(Path(CONFIG_DIR) / "logger" / "wandb.yaml").wandb.project)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distillab-dashboard", description=__doc__.splitlines()[0])
    parser.add_argument("groups", nargs="+", help="W&B run groups (the runs' experiment_name)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--eval", default="demo", help="the eval suite whose tasks get panels (conf/eval/NAME.yaml)"
    )
    which.add_argument("--tasks", nargs="+", help="task or perplexity-set names instead of a suite")
    parser.add_argument("--job-types", nargs="+", default=[], help="keep only these job types (apps, stages)")
    parser.add_argument(
        "--entity", default=os.environ.get("WANDB_ENTITY"), help="W&B entity (env WANDB_ENTITY)"
    )
    parser.add_argument(
        "--project",
        default=os.environ.get("WANDB_PROJECT") or logger_project(),
        help="W&B project (env WANDB_PROJECT; default: the logger config's)",
    )
    parser.add_argument("--out", type=Path, help="where the specs go (default outputs/dashboards/<groups>)")
    parser.add_argument("--save", action="store_true", help="push the views to W&B (needs an API key)")
    return parser


def task_metrics(args: argparse.Namespace) -> tuple[str, ...]:
    """``task/metric`` for each task's primary metric: from the named suite, or the named tasks of
    the registry and perplexity sets of the shipped suites."""
    from omegaconf import OmegaConf

    from distillab.config import CONFIG_DIR
    from distillab.evaluation import tasks
    from distillab.evaluation.retention import primary_metrics

    suites = {p.stem: p for p in sorted((Path(CONFIG_DIR) / "eval").glob("*.yaml"))}
    if not args.tasks:
        if args.eval not in suites:
            raise DistillabError(f"--eval: unknown suite {args.eval!r}; valid: {', '.join(suites)}")
        return _keys(primary_metrics(OmegaConf.to_container(OmegaConf.load(suites[args.eval]))))
    perplexity = {n for p in suites.values() for n in (OmegaConf.load(p).get("perplexity") or {})}
    for name in args.tasks:
        if name not in tasks.registry() and name not in perplexity:
            raise DistillabError(
                f"--tasks: {name!r} is neither a task of the registry ({', '.join(sorted(tasks.registry()))}) "
                f"nor a perplexity set ({', '.join(sorted(perplexity))})"
            )
    lm_eval = {name: {} for name in args.tasks if name not in perplexity}
    return _keys(
        primary_metrics({"tasks": lm_eval, "perplexity": {n: {} for n in args.tasks if n in perplexity}})
    )


def _keys(primary: dict[str, str]) -> tuple[str, ...]:
    return tuple(f"{task}/{metric}" for task, metric in primary.items())


def run(args: argparse.Namespace) -> None:
    if args.save and not args.entity:
        raise DistillabError("--entity: needed to save (your W&B user or team), or set WANDB_ENTITY")
    dash = Dashboard(
        entity=args.entity or "<entity>",
        project=args.project,
        groups=tuple(args.groups),
        metrics=task_metrics(args),
        job_types=tuple(args.job_types),
    )
    if args.save:
        try:
            workspace_url, report_url = save(dash)
        except Exception as err:  # wandb raises many types: no key, refused, unreachable
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
            raise DistillabError(
                f"--save: W&B did not take the views ({first}); check WANDB_API_KEY, --entity "
                f"{dash.entity} and WANDB_BASE_URL, or run without --save to write the specs"
            ) from None
        print(f"workspace: {workspace_url}\nreport: {report_url}")
        return
    out = args.out or Path("outputs/dashboards") / "+".join(dash.groups)
    workspace, report = write_specs(dash, out)
    print(f"wrote {workspace} and {report}")
    print(
        "push them: WANDB_API_KEY=... distillab-dashboard "
        f"{' '.join(dash.groups)} {'--tasks ' + ' '.join(args.tasks) if args.tasks else '--eval ' + args.eval} "
        f"--entity {args.entity or '<entity>'} --project {dash.project} --save"
    )


def check_extra() -> None:
    try:
        import wandb_workspaces  # noqa: F401
    except ImportError:
        raise DistillabError(
            "distillab-dashboard needs the dashboard extra: pip install 'distillab[dashboard]' "
            "(wandb-workspaces, W&B's library for views as code)"
        ) from None


def main(argv: list[str] | None = None) -> None:
    """A user's mistake, or the missing extra, is one ``error:`` line and exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        check_extra()
        run(args)
    except DistillabError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
