"""``distillab-dashboard``: the W&B views as code, offline.

The specs are compared to a committed snapshot (regenerate it after a deliberate change with
``DISTILLAB_UPDATE_SNAPSHOTS=1 pytest tests/test_dashboard.py``), every key they name is held
against what a real run of the test suite logged, and ``--save`` talks only to a stand-in server on
127.0.0.1 (``wandb_stub.py``)."""

from __future__ import annotations

import json
import os
import sys

import pytest
from conftest import REPO, compose_config, tiny_overrides
from wandb_files import finished_records
from wandb_stub import ENTITY, StubServer

from distillab import dashboard as cli
from distillab.tracking import dashboard
from distillab.tracking.wandb_run import summary_metrics

SNAPSHOTS = REPO / "tests" / "snapshots" / "dashboard"
# The snapshot's study: the claims study's groups and suite, a placeholder entity.
SNAPSHOT_ARGS = ["claims", "--eval", "decision_cpu", "--entity", "ENTITY"]


def snapshot_dashboard() -> dashboard.Dashboard:
    args = cli.build_parser().parse_args(SNAPSHOT_ARGS)
    return dashboard.Dashboard(
        entity=args.entity, project=args.project, groups=tuple(args.groups), metrics=cli.task_metrics(args)
    )


def test_the_specs_match_the_committed_snapshot_and_round_trip(tmp_path):
    dash = snapshot_dashboard()
    assert dash.metrics == (
        "arc_challenge_margin/choice_nll", "arc_easy/acc_norm", "piqa/acc_norm", "hellaswag/acc_norm",
        "lambada_openai/acc", "gsm8k_bpb/bpb", "wikitext2/ppl",
    )  # fmt: skip  # each task's primary metric, from the task registry
    written = dashboard.write_specs(dash, tmp_path)
    if os.environ.get("DISTILLAB_UPDATE_SNAPSHOTS"):
        SNAPSHOTS.mkdir(parents=True, exist_ok=True)
        for path in written:
            (SNAPSHOTS / path.name).write_text(path.read_text())
    for path in written:
        assert json.loads(path.read_text()) == json.loads((SNAPSHOTS / path.name).read_text()), path.name
    workspace = dashboard.workspace_json(dashboard.build_workspace(dash))
    report = dashboard.report_json(dashboard.build_report(dash))
    assert dashboard.workspace_json(dashboard.workspace_from_json(workspace)) == workspace
    assert dashboard.report_json(dashboard.report_from_json(report)) == report


def test_the_views_show_the_groups_runs_by_job_type_with_the_key_columns_pinned():
    dash = dashboard.Dashboard(
        "e", "p", ("claims", "larger_teacher"), ("wikitext2/ppl",), job_types=("distill",)
    )
    spec = json.loads(dashboard.workspace_json(dashboard.build_workspace(dash)))["spec"]["section"]
    filters = spec["runSets"][0]["filters"]["filters"]
    assert {(f["key"]["name"], f["op"], tuple(f["value"])) for f in filters} == {
        ("group", "IN", ("claims", "larger_teacher")),
        ("jobType", "IN", ("distill",)),
    }
    assert spec["runSets"][0]["grouping"] == [{"section": "run", "name": "group"}]  # several groups
    text = json.dumps(spec)
    for key in (
        "retention/mean",
        "retention_low/mean",
        "retention_high/mean",
        "size/bytes",
        "cost/train_tokens",
    ):
        assert f'"summary:{key}"' in text, key  # pinned columns
    alone = dashboard.Dashboard("e", "p", ("claims",), ())
    filters = json.loads(dashboard.workspace_json(dashboard.build_workspace(alone)))["spec"]["section"]
    assert {(f["key"]["name"], f["op"]) for f in filters["runSets"][0]["filters"]["filters"]} == {
        ("group", "="),
        ("jobType", "NIN"),  # every job type but distillab-report's own run
    }


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory, tiny_corpus):
    """A tiny distillation run with an evaluation and the W&B logger (offline), as users run it."""
    from distillab.distill import run

    run_dir = tmp_path_factory.mktemp("dash_run")
    perplexity = "{source: {format: jsonl, files: corpus/tiny.jsonl}, block_size: 32, max_tokens: 256}"
    results = run(
        compose_config(
            tiny_overrides(
                run_dir, tiny_corpus, "logger=wandb", "export=true", f"+eval.perplexity.tiny={perplexity}"
            )
        )
    )
    (offline,) = (run_dir / "wandb").glob("offline-run-*/*.wandb")
    history, summary = set(), set()
    for record in finished_records(offline):
        kind = record.WhichOneof("record_type")
        items = (
            record.history.item if kind == "history" else record.summary.update if kind == "summary" else []
        )
        keys = {i.key or "/".join(i.nested_key) for i in items}
        (history if kind == "history" else summary).update(keys)
    return results, history, summary


def test_every_key_a_panel_names_is_one_the_apps_log(logged_run):
    results, history, summary = logged_run
    keys = dashboard.panel_keys(dashboard.Dashboard("e", "p", ("demo",), ("tiny/ppl",)))
    produced = set(summary_metrics(results))  # what the code hands W&B as summary keys
    assert keys["summary"] <= produced, keys["summary"] - produced
    assert keys["summary"] <= summary, keys["summary"] - summary  # and what the offline run holds
    assert keys["history"] <= history, keys["history"] - history
    assert {f"{t}/_type" for t in keys["tables"]} <= history  # the logged wandb.Table
    assert results["train_tokens"] > 0 and results["bytes"]["student"] > 0


def test_save_pushes_the_views_and_a_second_save_updates_them(monkeypatch, capsys):
    server = StubServer()
    monkeypatch.setenv("WANDB_BASE_URL", server.url)
    monkeypatch.setenv("WANDB_API_KEY", "d" * 40)  # a dummy key: the stand-in accepts anything
    try:
        args = ["claims", "--eval", "decision_cpu", "--entity", ENTITY, "--project", "distillab", "--save"]
        cli.main(args)
        first = dict(server.views)
        cli.main(args)
    finally:
        server.close()
    assert sorted(v["type"] for v in server.views.values()) == ["project-view", "runs"]  # updated, not added
    assert server.views.keys() == first.keys()
    upserts = server.operations("UpsertView2")  # the workspace: created under its fixed name, then by id
    dash = dashboard.Dashboard(ENTITY, "distillab", ("claims",), snapshot_dashboard().metrics)
    assert [u.get("id") for u in upserts] == [None, "view1"]
    assert {u["name"] for u in upserts} == {dash.view_name}
    sent = json.loads(upserts[0]["spec"])
    assert sent == json.loads(dashboard.workspace_json(dashboard.build_workspace(dash)))["spec"]
    reports = server.operations("upsertView")
    assert [r.get("id") for r in reports] == [None, "view2"] and reports[0]["displayName"] == dash.title
    out = capsys.readouterr().out
    assert f"{server.url}/{ENTITY}/distillab?nw=" in out and "/reports/" in out


@pytest.mark.parametrize(
    "argv,message",
    [
        (
            ["claims", "--eval", "nope"],
            "error: --eval: unknown suite 'nope'; valid: decision, decision_cpu, demo",
        ),
        (
            ["claims", "--tasks", "arc_easy", "mmlu"],
            "error: --tasks: 'mmlu' is neither a task of the registry",
        ),
        (["claims", "--save"], "error: --entity: needed to save"),
    ],
)
def test_a_bad_argument_is_one_line_and_exit_status_2(argv, message, monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("WANDB_ENTITY", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*argv, "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and err.startswith(message), err
    assert not list(tmp_path.iterdir())  # nothing written


def test_without_the_extra_one_line_names_it(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "wandb_workspaces", None)  # what an install without it sees
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["claims", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err == (
        "error: distillab-dashboard needs the dashboard extra: pip install 'distillab[dashboard]' "
        "(wandb-workspaces, W&B's library for views as code)"
    )
    assert not list(tmp_path.iterdir())


def test_a_runs_wandb_name_tells_it_apart_within_its_group():
    """Every arm of a study shares the group (experiment_name); its W&B name is the arm, or in a
    sweep the job's overrides, so a dashboard's legend and run comparer tell the runs apart."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict

    from distillab.config import CONFIG_DIR
    from distillab.tracking.wandb_run import run_name

    def named(overrides, mode=RunMode.RUN, override_dirname=""):
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose("distill", overrides=overrides, return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.mode, cfg.hydra.job.override_dirname = mode, override_dirname
        HydraConfig.instance().set_config(cfg)
        try:
            return run_name(cfg.experiment_name)
        finally:
            HydraConfig.instance().cfg = None

    assert named(["experiment=claims/kd_s0"]) == "claims/kd_s0"
    assert named(["objective=kd", "seed=1"], RunMode.MULTIRUN, "objective=kd,seed=1") == "objective=kd,seed=1"
    assert named(["objective=kd"]) == "demo"  # a single run: its experiment_name
    assert run_name("demo") == "demo"  # composed in code, no Hydra job
