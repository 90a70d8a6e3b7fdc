"""Comparison views as code: one W&B Workspace view and one Report for a study's run group(s),
built with W&B's own library for its UI (``wandb-workspaces``).

Building the specs and writing them as JSON needs no account and no network. Saving needs both
(``save``): the Workspace gets a name derived from its entity, project and groups, so a second save
finds the view the first one made and updates it; the Report is found by its title the same way.

Every key a panel or pinned column names is one the apps log (``tracking/wandb_run.py``):
``retention/*`` with ``retention_low/*``/``retention_high/*``, ``size/*``, ``cost/*`` as run
summaries, ``train/loss`` and ``val/ppl`` as history, and the ``retention_table``.
``panel_keys`` lists them; a test holds them against what the apps write.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Run-summary keys of every finished app run (wandb_run.summary_metrics).
MEAN = "retention/mean"
MEAN_INTERVAL = ("retention_low/mean", "retention_high/mean")
BYTES = "size/bytes"
TOKENS = "cost/train_tokens"
# History keys logged while training (training/distill_module.py), and the logged table.
TRAINING_CURVES = ("train/loss", "val/ppl")
RETENTION_TABLE = "retention_table"
# distillab-report's own run carries no retention: every other job type (app or pipeline stage) is kept.
NOT_COMPARED_JOB_TYPES = ("report",)


@dataclass(frozen=True)
class Dashboard:
    """What the views show: the runs of ``groups`` in ``entity/project``, and the retention of each
    task's primary metric (``task/metric`` keys, from the task registry)."""

    entity: str
    project: str
    groups: tuple[str, ...]
    metrics: tuple[str, ...]
    job_types: tuple[str, ...] = ()  # empty: every job type but distillab-report's
    pinned: tuple[str, ...] = field(default=(MEAN, *MEAN_INTERVAL, BYTES, TOKENS))

    @property
    def title(self) -> str:
        return f"distillab: {', '.join(self.groups)}"

    @property
    def view_name(self) -> str:
        """The Workspace's internal name, the same on every save (``nw-<id>-v`` is W&B's form;
        the id holds no ``nw-``/``-v`` that W&B's URL parsing would strip)."""
        key = "/".join((self.entity, self.project, *self.groups))
        return f"nw-dl{hashlib.sha1(key.encode()).hexdigest()[:10]}-v"


def panel_keys(dash: Dashboard) -> dict[str, set[str]]:
    """Every key a panel or pinned column names: ``summary`` keys, ``history`` keys, ``tables``."""
    summary = {MEAN, *MEAN_INTERVAL, BYTES, TOKENS, *dash.pinned}
    summary |= {f"retention/{m}" for m in dash.metrics}
    return {"summary": summary, "history": set(TRAINING_CURVES), "tables": {RETENTION_TABLE}}


def _filters(dash: Dashboard):
    from wandb_workspaces import expr

    group = expr.Metric("Group")
    kept = [group == dash.groups[0]] if len(dash.groups) == 1 else [group.isin(list(dash.groups))]
    job = expr.Metric("JobType")
    kept.append(job.isin(list(dash.job_types)) if dash.job_types else job.notin(list(NOT_COMPARED_JOB_TYPES)))
    return kept


def _sections(dash: Dashboard) -> list[tuple[str, list[Any]]]:
    """``(title, panels)`` in the order they appear; panel ids are fixed (``dl-<section>-<n>``) so a
    saved view keeps its panels' identity across updates, and the spec is reproducible."""
    import wandb_workspaces.reports.v2 as wr

    by_group = wr.Metric("Group") if len(dash.groups) > 1 else None

    def mean_against(key: str, what: str):  # retention/mean over a run's cost, log x
        title = f"retention/mean against {what}"
        return wr.ScatterPlot(title=title, x=wr.SummaryMetric(key), y=wr.SummaryMetric(MEAN), log_x=True)

    sections = [
        (
            "Size and quality",
            [
                mean_against(BYTES, "bytes on disk"),
                wr.BarPlot(
                    title="retention/mean (its 95% interval: retention_low/mean, retention_high/mean)",
                    metrics=[wr.SummaryMetric(k) for k in (MEAN, *MEAN_INTERVAL)],
                    groupby=by_group,
                ),
            ],
        ),
        (
            "Retention per task (each task's primary metric)",
            [
                wr.BarPlot(
                    title=f"retention/{m}", metrics=[wr.SummaryMetric(f"retention/{m}")], groupby=by_group
                )
                for m in dash.metrics
            ],
        ),
        (
            "Budget curve",
            [mean_against(TOKENS, "training tokens")],
        ),
        ("Training", [wr.LinePlot(title=key, x="Step", y=[key]) for key in TRAINING_CURVES]),
        (
            "Runs",
            [wr.WeavePanelSummaryTable(table_name=RETENTION_TABLE), wr.RunComparer(diff_only="split")],
        ),
    ]
    for s, (_, panels) in enumerate(sections):
        for n, panel in enumerate(panels):
            panel._id = f"dl-{s}-{n}"
    return sections


def build_workspace(dash: Dashboard):
    """The Workspace view: the sections above over the filtered runs, key columns pinned."""
    import wandb_workspaces.workspaces as ws
    from wandb_workspaces import expr

    return ws.Workspace(
        entity=dash.entity,
        project=dash.project,
        name=dash.title,
        sections=[ws.Section(name=t, panels=p, is_open=True) for t, p in _sections(dash)],
        runset_settings=ws.RunsetSettings(
            filters=_filters(dash),
            groupby=[expr.Metric("Group")] if len(dash.groups) > 1 else [],
            pinned_columns=[f"summary:{k}" for k in dash.pinned],
        ),
    )


def build_report(dash: Dashboard, with_project: bool = False):
    """The Report: a heading and a paragraph per section, each section a panel grid over the same
    runs. ``with_project``: name the runs' project in each run set, which W&B resolves to its
    internal id on the server (so only ``save`` sets it; the offline spec leaves it to the report's)."""
    import wandb_workspaces.reports.v2 as wr

    where = {"entity": dash.entity, "project": dash.project} if with_project else {}
    blocks: list[Any] = [
        wr.P(
            "Retention is each run's metric over its teacher's on the same items; every run's "
            f"retention_table has the 95% paired interval per task. Groups: {', '.join(dash.groups)}."
        )
    ]
    for s, (title, panels) in enumerate(_sections(dash)):
        runset = wr.Runset(name=title, filters=_filters(dash), **where)
        runset._id = f"dl-runset-{s}"
        blocks += [wr.H2(title), wr.PanelGrid(runsets=[runset], panels=panels)]
    return wr.Report(
        entity=dash.entity,
        project=dash.project,
        title=dash.title,
        description="made by distillab-dashboard",
        blocks=blocks,
    )


def workspace_json(workspace) -> str:
    return workspace._to_model().model_dump_json(by_alias=True, exclude_none=True)


def report_json(report) -> str:
    return report._to_model().model_dump_json(by_alias=True, exclude_none=True)


def workspace_from_json(text: str):
    import wandb_workspaces.workspaces as ws
    from wandb_workspaces.workspaces import internal

    return ws.Workspace._from_model(internal.View.model_validate_json(text))


def report_from_json(text: str):
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces.reports.v2 import internal

    return wr.Report._from_model(internal.ReportViewspec.model_validate_json(text))


def write_specs(dash: Dashboard, out: Path) -> tuple[Path, Path]:
    """``workspace.json`` and ``report.json`` in ``out`` (pretty-printed, stable key order)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = out / "workspace.json", out / "report.json"
    for path, text in zip(
        paths, (workspace_json(build_workspace(dash)), report_json(build_report(dash))), strict=True
    ):
        path.write_text(json.dumps(json.loads(text), indent=1, sort_keys=True) + "\n")
    return paths


# Views of one type in a project, with their ids and names: how a save finds what it saved before.
_VIEWS_QUERY = """
query DistillabViews($entity: String!, $project: String!, $viewType: String!) {
  project(name: $project, entityName: $entity) {
    allViews(viewType: $viewType) { edges { node { id name displayName } } }
  }
}
"""


def _existing(entity: str, project: str, view_type: str) -> list[dict[str, str]]:
    import wandb
    from wandb_workspaces._graphql import execute_graphql  # the SDK-version-proof GraphQL call

    response = execute_graphql(
        wandb.Api(), _VIEWS_QUERY, {"entity": entity, "project": project, "viewType": view_type}
    )
    project_node = response.get("project") or {}
    return [e["node"] for e in (project_node.get("allViews") or {}).get("edges") or []]


def save(dash: Dashboard) -> tuple[str, str]:
    """Push the Workspace and the Report to W&B (``WANDB_BASE_URL``, ``WANDB_API_KEY``); each
    replaces the one an earlier save made. Returns their URLs."""
    workspace = build_workspace(dash)
    workspace._internal_name = dash.view_name
    found = [v for v in _existing(dash.entity, dash.project, "project-view") if v["name"] == dash.view_name]
    if found:
        workspace._internal_id = found[0]["id"]
    workspace.save()
    report = build_report(dash, with_project=True)
    found = [v for v in _existing(dash.entity, dash.project, "runs") if v.get("displayName") == dash.title]
    if found:
        report.id = found[0]["id"]
    report.save()
    return workspace.url, report.url
