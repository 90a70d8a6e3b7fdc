"""``distillab-report``: entries from runs and pipelines, the Pareto front, budget advice, plots."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from distillab.report import main
from distillab.tracking.compare import Entry, budget_advice, collect, markdown_report, pareto_front, tied_with

METRICS = ["a/acc", "b/ppl"]


def entry(label, megabytes, retention):
    return Entry(label, 1, int(megabytes * 1e6), {}, dict.fromkeys(METRICS, retention), mean=retention)


def test_pareto_front_keeps_only_undominated_models_smallest_first():
    entries = [
        entry("big", 500, 1.0),
        entry("q8", 140, 0.97),
        entry("q8-worse", 150, 0.90),  # bigger and worse than q8: dominated
        entry("q4", 80, 0.85),
        entry("q2", 50, 0.40),
        entry("q4-twin", 80, 0.80),  # same size as q4, worse
        entry("q4-less-metadata", 79.9999, 0.84),  # 100 bytes smaller, worse: no band of its own
    ]
    assert [e.label for e in pareto_front(entries)] == ["q2", "q4", "q8", "big"]
    advice = budget_advice(pareto_front(entries))
    assert advice[1].startswith("- budget 80 MB to 140 MB: **q4** (80.0 MB, retention/mean 85.0%)")
    assert advice[-1].startswith("- budget 500 MB and more: **big**")


def test_entries_without_a_recorded_retention_mean_are_not_ranked():
    partial = Entry("partial", 1, 10, {}, {"a/acc": 1.0})  # results written before retention/mean
    assert partial.mean is None and pareto_front([partial]) == []


def write_run(path, student_bytes, retention, **extra):
    path.mkdir(parents=True)
    results = {
        "params": {"teacher": 10, "student": 5},
        "bytes": {"student": student_bytes},
        "student": dict.fromkeys(METRICS, 0.5),
        "retention": dict.fromkeys(METRICS, retention),
        "retention_mean": {"value": retention, "low": None, "high": None, "metrics": METRICS},
        **extra,
    }
    (path / "results.json").write_text(json.dumps(results))


def test_report_collects_runs_and_pipelines_and_writes_plots(tmp_path):
    write_run(tmp_path / "sweep" / "0", 2_000_000, 0.9, experiment="quant_alone")
    write_run(tmp_path / "sweep" / "1", 1_000_000, 0.95, experiment="quant_alone")
    (tmp_path / "sweep" / "0" / ".hydra").mkdir()
    (tmp_path / "sweep" / "0" / ".hydra" / "overrides.yaml").write_text("- quantize.gguf_type=q8_0\n")
    (tmp_path / "sweep" / "1" / ".hydra").mkdir()
    (tmp_path / "sweep" / "1" / ".hydra" / "overrides.yaml").write_text("- quantize.gguf_type=q4_0\n")
    pipe = tmp_path / "pipe"
    pipe.mkdir()
    row = {
        "stage": "teacher",
        "params": 10,
        "bytes": 4_000_000,
        "metrics": {},
        "retention": dict.fromkeys(METRICS, 1.0),
        "mean_retention": 1.0,
    }
    (pipe / "pipeline.json").write_text(json.dumps([row]))
    labels = [e.label for e in collect([tmp_path / "sweep", pipe])]
    assert labels == [
        "quant_alone/quantize.gguf_type=q8_0",
        "quant_alone/quantize.gguf_type=q4_0",
        "pipe/teacher",
    ]
    out = tmp_path / "report"
    main([str(tmp_path / "sweep"), str(pipe), "--metrics", *METRICS, "--out", str(out)])
    text = (out / "report.md").read_text()
    assert "| quant_alone/quantize.gguf_type=q8_0 | 0.0M | 2.0 MB |" in text  # dominated: no star
    assert "**quant_alone/quantize.gguf_type=q4_0**" in text and "**pipe/teacher**" in text
    assert (out / "pareto.png").stat().st_size > 0 and (out / "per_task.png").stat().st_size > 0


def _sweep_job(root, name, ppl, overrides, tokens=None, flops=None):
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("\n".join(f"- {o}" for o in overrides) + "\n")
    retention = 36.0 / ppl
    (run / "results.json").write_text(
        json.dumps(
            {
                "teacher": {"wikitext2/ppl": 36.0},
                "student": {"wikitext2/ppl": ppl},
                "retention": {"wikitext2/ppl": retention},
                "retention_interval": {"wikitext2/ppl": [retention - 0.05, retention + 0.05]},
                "primary": ["wikitext2/ppl"],
                "retention_mean": {"value": retention, "low": retention - 0.05, "high": retention + 0.05},
                "params": {"teacher": 100, "student": 80},
                "train_tokens": tokens,
                "cost": {"flops": {"total": flops}, "wall_seconds": {"train": 1.0, "other": 1.0}}
                if flops
                else None,
            }
        )
    )
    return run


def test_the_cost_front_keeps_the_recipes_no_cheaper_one_beats(tmp_path):
    from distillab.tracking.compare import collect, cost_of, pareto_front

    for name, ppl, flops in (
        ("cheap", 60.0, 1e12),
        ("dear_and_worse", 70.0, 5e12),
        ("dear_and_best", 40.0, 9e12),
    ):
        _sweep_job(tmp_path / "recipes", name, ppl, [f"+recipe={name}"], tokens=1000, flops=flops)
    entries = collect([tmp_path / "recipes"])
    front = pareto_front(entries, size=lambda e: cost_of(e, "flops"))
    assert [e.label.split("=")[-1] for e in front] == ["cheap", "dear_and_best"]
    assert cost_of(entries[0], "seconds") == 2.0
    out = tmp_path / "cost.png"
    main(
        [
            str(tmp_path / "recipes"),
            "--out",
            str(tmp_path / "r"),
            "--plot-cost",
            str(out),
            "--cost-axis",
            "flops",
        ]
    )
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_wall_hours_front_is_refused_over_runs_timed_on_different_machines(tmp_path, capsys):
    for name, device in (
        ("xeon", "Intel Xeon, 2 logical CPUs (AMX)"),
        ("epyc", "AMD EPYC, 2 logical CPUs (AVX2)"),
    ):
        run = _sweep_job(tmp_path / "recipes", name, 50.0, [f"+recipe={name}"], tokens=1000, flops=1e12)
        results = json.loads((run / "results.json").read_text())
        results["cost"]["device"] = device
        (run / "results.json").write_text(json.dumps(results))
    argv = [str(tmp_path / "recipes"), "--out", str(tmp_path / "r"), "--plot-cost", str(tmp_path / "c.png")]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--cost-axis", "seconds"])
    assert exit_info.value.code == 2 and not (tmp_path / "r").exists()  # refused before writing
    err = capsys.readouterr().err
    assert "error: --cost-axis seconds: the runs were timed on 2 machines (" in err
    assert (
        "Intel Xeon, 2 logical CPUs (AMX): 1 run" in err and "AMD EPYC, 2 logical CPUs (AVX2): 1 run" in err
    )
    main([*argv, "--cost-axis", "flops"])  # counted FLOPs are the same on any machine
    assert (tmp_path / "c.png").is_file()


def test_a_sweep_is_one_row_per_job_labelled_by_its_overrides_with_intervals(tmp_path, capsys):
    _sweep_job(tmp_path / "sweep", "0", 72.0, ["objective=ce", "experiment_name=s"])
    _sweep_job(tmp_path / "sweep", "1", 48.0, ["objective=kd", "experiment_name=s", "ckpt_path=last"])
    (tmp_path / "sweep" / "2").mkdir()
    (tmp_path / "sweep" / "2" / "failure.json").write_text(
        json.dumps({"error": "ValueError", "message": "boom"})
    )
    main([str(tmp_path / "sweep"), "--out", str(tmp_path / "report")])
    printed = capsys.readouterr().out
    assert printed.index("| 2: FAILED | ValueError: boom |") < printed.index("| model |")  # failures first
    assert "| objective=ce | 0.0M | n/a | 72 (50.0% [45.0, 55.0]) | 50.0% [45.0, 55.0] |" in printed
    assert "| objective=kd | 0.0M | n/a | 48 (75.0% [70.0, 80.0]) | 75.0% [70.0, 80.0] |" in printed


def test_report_plots_and_wandb_run_are_written(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    for step, ppl in ((24, 72.0), (96, 54.0)):
        _sweep_job(
            tmp_path / "curve", f"steps_{step}", ppl, [f"trainer.max_steps={step}"], tokens=step * 1024
        )
    plots = {flag: tmp_path / "plots" / f"{flag}.png" for flag in ("plot", "plot-params", "plot-tokens")}
    out = tmp_path / "report"
    args = [str(p) for p in sorted((tmp_path / "curve").iterdir())]
    main(
        [
            *args,
            "--out",
            str(out),
            "--wandb",
            "study",
            *[a for f, p in plots.items() for a in (f"--{f}", str(p))],
        ]
    )
    for png in plots.values():
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert printed.count("plot:") == 5 and "W&B files:" in printed
    assert list((out / "wandb").glob("offline-run-*"))


def test_report_on_a_missing_path_is_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "distillab.report", str(tmp_path / "nope")], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "nope" in proc.stderr


def test_every_app_logs_the_same_summary_keys():
    from distillab.tracking.wandb_run import summary_metrics

    flat = summary_metrics(
        {
            "student": {"a/acc": 0.4},
            "teacher": {"a/acc": 0.5},
            "retention": {"a/acc": 0.8, "a/acc_norm": 0.5, "b/ppl": None},
            "retention_interval": {"a/acc": [0.7, 0.9]},
            "retention_mean": {"value": 0.8, "low": 0.7, "high": 0.9, "metrics": ["a/acc"]},
            "params": {"teacher": 10, "student": 5},
            "bytes": {"student": 123},
            "tokens_per_s": 9.5,
        }
    )
    assert flat == {
        "eval/a/acc": 0.4,
        "teacher/a/acc": 0.5,
        "retention/a/acc": 0.8,
        "retention/a/acc_norm": 0.5,
        "retention_low/a/acc": 0.7,
        "retention_high/a/acc": 0.9,
        "retention/mean": 0.8,  # over the primary metrics only, not every metric of every task
        "retention_low/mean": 0.7,
        "retention_high/mean": 0.9,
        "size/params": 5,
        "size/bytes": 123,
        "speed/decode_tokens_per_s": 9.5,
    }


def test_a_stage_shared_by_two_pipelines_is_reported_once(tmp_path):
    def row(stage, output):
        return {"stage": stage, "params": 5, "bytes": 10, "metrics": {}, "retention": {}, "output": output}

    shared = {"name_or_path": str(tmp_path / "a" / "01-distill-abc" / "student")}
    for name, last in (("a", "heal"), ("b", "heal_quantized")):
        (tmp_path / name).mkdir()
        rows = [row("distill", shared), row(last, {"name_or_path": str(tmp_path / name / "02")})]
        (tmp_path / name / "pipeline.json").write_text(json.dumps(rows))
    labels = [e.label for e in collect([tmp_path / "a", tmp_path / "b"])]
    assert labels == ["a/distill", "a/heal", "b/heal_quantized"]


def test_plot_labels_keep_the_experiment_and_drop_config_paths():
    from distillab.tracking.plots import tick_label

    assert tick_label("quant_alone/quantize.gguf_type=q4_1", 60) == "quant_alone/gguf_type=q4_1"
    assert tick_label("prune.score=angular heal.trainer.max_steps=24", 60) == "score=angular max_steps=24"
    assert tick_label("pipeline_study/heal", 60) == "pipeline_study/heal"


def test_a_report_says_when_retentions_divide_by_different_models(tmp_path):
    """A quantize run of a pruned student (retention vs that student) next to runs measured against
    the teacher: the report names the groups instead of ranking them as one."""
    teacher = dict.fromkeys(METRICS, 0.8)
    write_run(tmp_path / "a", 2_000_000, 0.9, teacher=teacher)
    write_run(tmp_path / "b", 1_000_000, 0.95, teacher=teacher)
    same = markdown_report(collect([tmp_path / "a", tmp_path / "b"]), METRICS)
    assert "measured against different models" not in same
    write_run(tmp_path / "c", 500_000, 0.99, teacher=dict.fromkeys(METRICS, 0.4))
    mixed = markdown_report(collect([tmp_path / "a", tmp_path / "b", tmp_path / "c"]), METRICS)
    assert "measured against different models" in mixed
    assert f"{METRICS[0]} = 0.8: " in mixed and f"{METRICS[0]} = 0.4: " in mixed


def _run_with_items(folder, acc, nll_sums, primary=("arc/acc", "wiki/ppl")):
    from distillab.evaluation import items

    folder.mkdir(parents=True)
    ids = [f"doc{i}" for i in range(len(acc))]
    items.write_suite(
        folder / "items" / "student",
        {
            "arc": {"id": ids, "acc": list(acc)},
            "wiki": items.perplexity_items(nll_sums, [10] * len(nll_sums)),
        },
    )
    (folder / "results.json").write_text(json.dumps({"primary": list(primary), "student": {}}))
    return folder


def test_compare_cli_answers_is_b_better_with_interval_and_p(tmp_path, capsys):
    """B is right on 60 more of 400 items and has lower perplexity on every block."""
    a = _run_with_items(tmp_path / "a", [1.0] * 100 + [0.0] * 300, [30.0] * 50)
    b = _run_with_items(tmp_path / "b", [1.0] * 160 + [0.0] * 240, [28.0] * 25 + [29.0] * 25)
    main(["--a", str(a), "--b", str(b), "--out", str(tmp_path / "out")])
    text = capsys.readouterr().out
    arc = next(line for line in text.splitlines() if line.startswith("| arc/acc"))
    assert "| 400 | 0.25 | 0.4 | +0.15 [" in arc and arc.endswith("| B better |")
    wiki = next(line for line in text.splitlines() if line.startswith("| wiki/ppl"))
    assert wiki.endswith("| B better |")  # lower perplexity is better
    assert (tmp_path / "out" / "compare.md").read_text() == text.split("written:")[0]
    # the same run against itself: no difference, within noise
    main(["--a", str(a), "--b", str(a), "--metrics", "arc/acc", "--out", str(tmp_path / "out")])
    assert "| within noise |" in capsys.readouterr().out


def test_compare_cli_refuses_runs_on_other_items(tmp_path):
    a = _run_with_items(tmp_path / "a", [1.0, 0.0, 1.0], [30.0])
    b = _run_with_items(tmp_path / "b", [1.0, 0.0], [30.0])
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "distillab.report",
            "--a",
            str(a),
            "--b",
            str(b),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "arc/acc" in proc.stderr and "same items" in proc.stderr


def test_compare_cli_picks_another_model_of_a_run(tmp_path, capsys):
    """RUN:teacher / RUN:student_before: one run answers "did healing move the cut model?"."""
    from distillab.evaluation import items

    run = _run_with_items(tmp_path / "run", [1.0] * 50 + [0.0] * 50, [30.0] * 20)
    ids = [f"doc{i}" for i in range(100)]
    items.write_suite(run / "items" / "student_before", {"arc": {"id": ids, "acc": [1.0] * 10 + [0.0] * 90}})
    main(
        [
            "--a",
            f"{run}:student_before",
            "--b",
            str(run),
            "--metrics",
            "arc/acc",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("| arc/acc"))
    assert "| 100 | 0.1 | 0.5 | +0.4 [" in line and line.endswith("| B better |")
    # the same GGUF scored in llama.cpp against its torch score: RUN:student_llama_cpp
    items.write_suite(
        run / "items" / "student_llama_cpp", {"arc": {"id": ids, "acc": [1.0] * 50 + [0.0] * 50}}
    )
    main(
        [
            "--a",
            str(run),
            "--b",
            f"{run}:student_llama_cpp",
            "--metrics",
            "arc/acc",
            "--out",
            str(tmp_path / "o2"),
        ]
    )
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("| arc/acc"))
    assert "| 100 | 0.5 | 0.5 | +0 [" in line


def test_compare_cli_one_line_errors_for_bad_arms(tmp_path):
    run = _run_with_items(tmp_path / "run", [1.0, 0.0], [30.0])
    for args, message in [
        (["--a", f"{run}:teachr", "--b", str(run)], "unknown model 'teachr'"),
        (["--a", str(run), str(run), "--b", str(run)], "given twice"),
        ([str(run), "--a", str(run), "--b", str(run)], "not both"),
    ]:
        proc = subprocess.run(
            [sys.executable, "-m", "distillab.report", *args], capture_output=True, text=True
        )
        assert proc.returncode == 2 and message in proc.stderr and proc.stderr.strip().count("\n") == 0


def test_runs_of_other_recipes_are_separate_curves_in_the_tokens_plot(tmp_path, monkeypatch):
    """A GPU run at batch 64 is not the next point of a CPU curve at batch 4: each (metric, recipe)
    is its own line, and the recipe comes from results.json's precision and Hydra's saved config."""
    for name, device, batch, tokens in [
        ("cpu_a", "cpu", 4, 1024),
        ("cpu_b", "cpu", 4, 4096),
        ("gpu", "cuda", 64, 65536),
    ]:
        precision = {"name": "float32" if device == "cpu" else "bf16", "device_type": device}
        write_run(tmp_path / name, 10, 0.8, train_tokens=tokens, precision=precision)
        (tmp_path / name / ".hydra").mkdir()
        (tmp_path / name / ".hydra" / "config.yaml").write_text(
            f"data:\n  batch_size: {batch}\n  block_size: 256\n"
        )
    entries = collect([tmp_path / n for n in ("cpu_a", "cpu_b", "gpu")])
    assert [e.recipe for e in entries] == ["cpu float32 batch 4×256"] * 2 + ["cuda bf16 batch 64×256"]

    drawn = {}
    monkeypatch.setattr(
        "distillab.report.retention_vs_tokens", lambda series, out: drawn.update(series) or out
    )
    main(
        [str(tmp_path / n) for n in ("cpu_a", "cpu_b", "gpu")]
        + ["--out", str(tmp_path / "r"), "--metrics", *METRICS, "--plot-tokens", str(tmp_path / "t.png")]
    )
    assert sorted(drawn) == sorted(
        (m, r) for m in METRICS for r in ("cpu float32 batch 4×256", "cuda bf16 batch 64×256")
    )
    assert [p[0] for p in drawn[("a/acc", "cpu float32 batch 4×256")]] == [1024, 4096]


def test_a_model_off_the_front_by_point_estimate_alone_is_marked_tied_not_dominated():
    def with_interval(label, megabytes, mean, low, high):
        e = entry(label, megabytes, mean)
        e.mean_interval = [low, high]
        return e

    small = with_interval("small", 50, 0.70, 0.66, 0.74)
    best = with_interval("best", 100, 0.858, 0.834, 0.885)
    twin = with_interval("twin", 100, 0.857, 0.833, 0.883)  # same size, 0.1 point lower: noise
    worse = with_interval("worse", 120, 0.60, 0.55, 0.65)  # larger, and its interval is clear of best's
    entries = [small, best, twin, worse]
    front = pareto_front(entries)
    assert [e.label for e in front] == ["small", "best"]
    assert tied_with(twin, front) is best and tied_with(worse, front) is None
    assert tied_with(best, front) is None  # on the front itself
    # Overlapping only the smaller, weaker front model is not a tie: the best no-larger one decides.
    assert tied_with(with_interval("mid", 100, 0.65, 0.60, 0.71), front) is None
    rows = {line.split(" | ")[0].strip("| "): line for line in markdown_report(entries, METRICS).splitlines()}
    assert rows["twin"].endswith("| ≈ best |") and rows["worse"].endswith("|  |")
    assert rows["best"].endswith("| ★ |")
    assert budget_advice(front, {id(best): [twin]})[1].endswith("; within noise of it: twin")
    # Runs with per-item results are judged by the paired test, not by overlapping intervals.
    twin.run = best.run = Path("runs")
    assert tied_with(twin, front, paired=lambda a, b: False) is None
    assert tied_with(twin, front, paired=lambda a, b: None) is best  # not comparable: overlap decides


def _runs_with_teacher(tmp_path) -> list[Path]:
    """Runs a and b: teacher right on all 400 items and at ppl 30 on wiki; a right on 100, b on 160."""
    from distillab.evaluation import items

    teacher_scores = {"arc/acc": 1.0, "wiki/ppl": 30.0}
    runs = []
    for name, acc, nll in (("a", 100, [30.0] * 50), ("b", 160, [28.5] * 50)):
        run = _run_with_items(tmp_path / name, [1.0] * acc + [0.0] * (400 - acc), nll)
        record = json.loads((run / "results.json").read_text()) | {"teacher": teacher_scores}
        record["student"] = {"arc/acc": acc / 400, "wiki/ppl": math.exp(nll[0] / 10)}
        (run / "results.json").write_text(json.dumps(record))
        items.write_suite(
            run / "items" / "teacher",
            {
                "arc": {"id": [f"doc{i}" for i in range(400)], "acc": [1.0] * 400},
                "wiki": items.perplexity_items([10 * math.log(30.0)] * 50, [10] * 50),
            },
        )
        runs.append(run)
    return runs


def test_compare_cli_adds_retention_mean_against_the_shared_teacher(tmp_path, capsys):
    """retention/mean is the mean of the student's accuracy (the teacher is always right) and
    30 / its perplexity, for A and B alike, and B's gain is significant."""
    runs = _runs_with_teacher(tmp_path)
    main(["--a", str(runs[0]), "--b", str(runs[1]), "--out", str(tmp_path / "out")])
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("| retention/mean"))
    a_mean = (0.25 + 30 / math.exp(3.0)) / 2
    b_mean = (0.40 + 30 / math.exp(2.85)) / 2
    assert f"| {100 * a_mean:.1f}% | {100 * b_mean:.1f}% | {100 * (b_mean - a_mean):+.2f} [" in line
    assert line.endswith("| B better |")
    # Another teacher: no retention/mean difference, and the reason is printed.
    other = json.loads((runs[1] / "results.json").read_text()) | {
        "teacher": {"arc/acc": 0.9, "wiki/ppl": 30.0}
    }
    (runs[1] / "results.json").write_text(json.dumps(other))
    main(["--a", str(runs[0]), "--b", str(runs[1]), "--out", str(tmp_path / "out")])
    assert "retention/mean: not compared: the runs' teachers score differently" in capsys.readouterr().out


def test_the_pareto_tie_uses_the_paired_retention_mean_test_on_real_runs(tmp_path):
    from distillab.tracking.compare import paired_tie

    a, b = _runs_with_teacher(tmp_path)
    assert paired_tie(a, b) is False  # b is clearly better: not a tie
    assert paired_tie(a, a) is True
    (a / "items" / "teacher" / "arc.csv").unlink()  # the teacher items are read from run A
    assert paired_tie(a, b) is None  # no per-item teacher results: the caller falls back to overlap


def test_labels_drop_what_every_run_given_shares_and_name_runs_that_differ_only_in_bookkeeping(tmp_path):
    from distillab.tracking.runs import run_labels

    def run(name, *overrides):
        folder = tmp_path / name
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
        return folder

    runs = [
        run("r1", "eval=decision_cpu", "logger=csv", "seed=1"),
        run("r2", "eval=decision_cpu", "logger=wandb", "seed=1"),
        run("r3", "eval=decision_cpu", "seed=2", "trainer.val_check_interval=400"),
    ]
    assert run_labels(runs) == ["seed=1 (r1)", "seed=1 (r2)", "seed=2"]
    # A folder named on the command line (a study's arm) is the label its author chose.
    arm = run("kd_s0", "eval=decision_cpu", "objective=kd", "seed=0")
    (arm / ".hydra" / "hydra.yaml").write_text(
        "hydra:\n  overrides:\n    hydra:\n    - hydra.run.dir=outputs/claims/kd_s0\n    - hydra.mode=RUN\n"
    )
    assert run_labels([*runs, arm]) == ["seed=1 (r1)", "seed=1 (r2)", "seed=2", "kd_s0"]


def _cut_short(path: Path, keep: float = 0.5, extra: int = 0) -> None:
    """What a crash mid-copy leaves: the first part of the file."""
    text = path.read_text()
    path.write_text(text[: int(len(text) * keep) + extra])


@pytest.mark.parametrize(
    "damage,mode,message",
    [
        ("results", "compare", "results.json: not valid JSON"),
        ("results", "table", "results.json: not valid JSON"),
        ("items_cut", "compare", "wiki.csv: damaged per-item results (its last row is cut short"),
        ("items_row", "compare", "wiki.csv: damaged per-item results (line 3 has 1 fields"),
        ("items_value", "compare", "arc.csv: damaged per-item results (column 'acc'"),
    ],
)
def test_a_damaged_run_folder_is_one_line_naming_the_file(tmp_path, damage, mode, message):
    """A results.json or items CSV cut short (a crash, a copy) is one error line, exit 2, no traceback,
    and no report is written; before, a JSON decoder or index error surfaced as a traceback."""
    a = _run_with_items(tmp_path / "a", [1.0, 0.0, 1.0, 1.0], [30.0, 31.0, 29.0])
    b = _run_with_items(tmp_path / "b", [1.0, 1.0, 1.0, 0.0], [28.0, 30.0, 29.0])
    wiki, arc = b / "items" / "student" / "wiki.csv", b / "items" / "student" / "arc.csv"
    if damage == "results":
        _cut_short(b / "results.json")
    elif damage == "items_cut":
        _cut_short(wiki, extra=-3)
    elif damage == "items_row":  # cut exactly after a field: the last row lacks its other columns
        lines = wiki.read_text().splitlines()
        wiki.write_text("\n".join([*lines[:2], lines[2].split(",")[0]]) + "\n")
    else:
        arc.write_text(arc.read_text().replace("1.0", "1.", 1).replace("0.0", "x", 1))
    args = ["--a", str(a), "--b", str(b)] if mode == "compare" else [str(a), str(b)]
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "distillab.report", *args, "--out", str(out)], capture_output=True, text=True
    )
    assert proc.returncode == 2, proc.stderr[-800:]
    assert proc.stderr.startswith("error: ") and proc.stderr.strip().count("\n") == 0, proc.stderr[-800:]
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


def test_items_read_back_exactly_and_a_cut_file_is_never_misread():
    """Cut anywhere but a line end, the file is refused; cut at a line end it reads as its first rows
    (fewer items: a comparison then refuses runs on different items, and a score no longer
    reproduces from them, so it gets no interval)."""
    from distillab.evaluation import items

    suite = {"id": ["a", "b"], "acc": [1.0, 0.0], "nll_sum": [2.5, 3.25]}
    text = items.to_csv(suite)
    assert items.from_csv(text) == suite
    for cut in range(1, len(text)):
        if text[cut - 1] != "\n":
            with pytest.raises(ValueError):
                items.from_csv(text[:cut])
        else:
            rows = len(text[:cut].splitlines()) - 1
            assert items.from_csv(text[:cut]) == {k: v[:rows] for k, v in suite.items()}


def test_a_gguf_scored_in_llama_cpp_is_a_second_entry_and_scored_in_keeps_one_runtime(tmp_path, capsys):
    run = _sweep_job(tmp_path / "qad", "q4_1", 40.0, ["quantize.gguf_type=q4_1"])
    results = json.loads((run / "results.json").read_text())
    results["student_llama_cpp"] = {"wikitext2/ppl": 45.0}
    results["llama_cpp"] = {
        "retention": {"wikitext2/ppl": 0.8},
        "retention_interval": {"wikitext2/ppl": [0.75, 0.85]},
        "retention_mean": {"value": 0.8, "low": 0.75, "high": 0.85},
    }
    (run / "results.json").write_text(json.dumps(results))
    from distillab.tracking.compare import collect

    torch_entry, llama_entry = collect([tmp_path / "qad"])
    assert (torch_entry.scored_in, llama_entry.scored_in) == ("torch", "llama.cpp")
    assert llama_entry.label == f"{torch_entry.label} (llama.cpp)" and llama_entry.mean == 0.8
    assert llama_entry.metrics == {"wikitext2/ppl": 45.0} and llama_entry.bytes == torch_entry.bytes
    assert str(llama_entry.run) == f"{torch_entry.run}:student_llama_cpp"  # its paired tests read its items
    main([str(tmp_path / "qad"), "--out", str(tmp_path / "r"), "--scored-in", "llama.cpp"])
    table = (tmp_path / "r" / "report.md").read_text()
    assert (
        table.count("gguf_type=q4_1") == table.count("gguf_type=q4_1 (llama.cpp)") > 0
    )  # the torch entry is gone
