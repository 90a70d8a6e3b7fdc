"""The task registry (evaluation/lm_eval_tasks/): one checked-in lm-eval YAML per task states its data,
primary metric and directions, and evaluation, retention, the report and the Makefile read it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from distillab.errors import DistillabError
from distillab.evaluation import tasks
from distillab.evaluation.retention import lower_is_better, primary_metrics
from tests.conftest import REPO, SHARED_DATA

needs_data = pytest.mark.skipif(not (SHARED_DATA / "arc_easy").is_dir(), reason="needs ../shared/data")


def test_every_task_file_is_named_after_its_task_and_states_a_primary_metric_it_reports():
    names = {p.stem for p in tasks.TASK_DIR.glob("*.yaml")}
    assert names == set(tasks.registry()) and {"arc_challenge_margin", "gsm8k_bpb", "piqa"} <= names
    for name in names:
        assert tasks.primary_metric(name) in tasks.metrics(name), name
        spec = tasks.registry()[name]
        assert (spec.extends is None) != (spec.include is None), (
            f"{name}: extends lm-eval's task or includes one"
        )


def test_primary_metrics_and_directions_come_from_the_registry():
    assert tasks.primary_metric("arc_challenge_margin") == "choice_nll" and tasks.primary_metric("gsm8k") == (
        "exact_match_strict-match"
    )
    assert tasks.higher_is_better("arc_challenge_margin", "choice_nll") is False
    assert tasks.higher_is_better("arc_challenge_margin", "acc_norm") is True  # the variant's own metric_list
    assert tasks.higher_is_better("lambada_openai", "perplexity") is False
    assert tasks.higher_is_better("not_a_task", "acc") is None
    assert lower_is_better("lambada_openai/perplexity") and not lower_is_better("lambada_openai/acc")
    assert lower_is_better("wikitext2/ppl")  # a perplexity set
    assert primary_metrics({"tasks": {"piqa": {}, "gsm8k_bpb": {"primary": "bpb"}}}) == {
        "piqa": "acc_norm",
        "gsm8k_bpb": "bpb",
    }
    with pytest.raises(
        DistillabError, match=r"eval.tasks.piqa.primary: 'bpb' is not a metric of piqa; valid: acc"
    ):
        primary_metrics({"tasks": {"piqa": {"primary": "bpb"}}})


def test_a_new_task_is_one_yaml(tmp_path, monkeypatch):
    """A task that derives from a registry task by changing only its primary metric: one file."""
    for path in tasks.TASK_DIR.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / "piqa_acc.yaml").write_text(
        "include: piqa.yaml\ntask: piqa_acc\ndistillab:\n  primary: acc\n"
    )
    monkeypatch.setattr(tasks, "TASK_DIR", tmp_path)
    tasks.registry.cache_clear()
    try:
        assert tasks.primary_metric("piqa_acc") == "acc" and tasks.metrics("piqa_acc") == tasks.metrics(
            "piqa"
        )
        out = tasks.render(["piqa_acc"], None, tmp_path / "out")
        assert sorted(p.name for p in out.iterdir()) == ["piqa.yaml", "piqa_acc.yaml"]
        assert (
            tasks.derived_definition(["piqa_acc"]) is not None and tasks.derived_definition(["piqa"]) is None
        )
    finally:
        tasks.registry.cache_clear()


@pytest.fixture(scope="module")
def lm_eval_tasks(tmp_path_factory):
    """Every registry task rendered against the local data, and one lm-eval TaskManager over them
    (indexing lm-eval's tasks takes seconds: once for all)."""
    from lm_eval.tasks import TaskManager

    out = tasks.render(sorted(tasks.registry()), SHARED_DATA, tmp_path_factory.mktemp("lm_eval_tasks"))
    return TaskManager(include_path=str(out))


@needs_data
@pytest.mark.parametrize("name", sorted(tasks.registry()))
def test_the_registry_matches_what_lm_eval_loads(lm_eval_tasks, name):
    """What lm-eval itself makes of each rendered YAML: the local files, and exactly the metrics
    (metric_filter names) and directions the registry states."""
    config = lm_eval_tasks.load_task_or_group([name])[name].config
    assert str(SHARED_DATA) in str(config.dataset_kwargs["data_files"])
    filters = [f["name"] for f in config.filter_list or []] or ["none"]
    reported = {
        (m["metric"] if filters == ["none"] else f"{m['metric']}_{f}"): m.get("higher_is_better", True)
        for m in config.metric_list
        for f in filters
    }
    assert reported == tasks.metrics(name)


def test_render_refuses_a_task_without_local_data_and_names_the_registry(tmp_path):
    with pytest.raises(DistillabError, match=r"eval.tasks.mmlu: no local data layout .*lm_eval_tasks"):
        tasks.render(["mmlu"], tmp_path, tmp_path / "out")
    assert tasks.render(["mmlu", "arc_easy"], None, tmp_path / "hub") is None  # lm-eval's own, from the hub


def test_the_makefile_metric_lists_come_from_the_registry():
    run = [sys.executable, "-m", "distillab.evaluation.tasks"]
    listed = subprocess.run([*run, "piqa", "gsm8k_bpb"], capture_output=True, text=True, check=True).stdout
    assert listed.split() == ["piqa/acc_norm", "gsm8k_bpb/bpb"]
    decision = subprocess.run([*run, "--eval", "decision_cpu"], capture_output=True, text=True, check=True)
    assert "wikitext2/ppl" in decision.stdout.split() and "arc_challenge_margin/choice_nll" in decision.stdout
    makefile = (REPO / "Makefile").read_text()
    assert "acc_norm" not in makefile, "the Makefile names tasks; their metrics come from the registry"
