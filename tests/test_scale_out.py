"""Scale-out on existing engines, on CPU: 2-process DDP (gloo) inside a Hydra sweep, a sweep through
submitit's local launcher, and 2 Optuna trials maximising the returned retention."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from conftest import tiny_overrides

from distillab.errors import DistillabError
from distillab.sweeps import sweep_value

PPL = [
    "+eval.perplexity.tiny.source.files=corpus/tiny.jsonl",
    "+eval.perplexity.tiny.block_size=32",
    "+eval.perplexity.tiny.max_tokens=128",
]


def sweep(tmp_path, tiny_corpus, *extra: str) -> subprocess.CompletedProcess:
    args = [a for a in tiny_overrides(tmp_path, tiny_corpus) if not a.startswith("paths.run_dir")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "distillab.distill",
            "-m",
            *args,
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
            "logger=csv",
            *extra,
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,  # Lightning's DDP rank 1 re-runs the command with its own Hydra run dir: keep it here
        timeout=600,
    )


def test_ddp_two_processes_inside_a_sweep_run_each_job_once(tmp_path, tiny_corpus):
    out = sweep(tmp_path, tiny_corpus, "trainer=ddp", "trainer.devices=2", "trainer.max_steps=2,3")
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert jobs == ["0", "1"]  # the ranks did not re-run the sweep
    steps = [json.loads((tmp_path / "sweep" / j / "results.json").read_text()) for j in jobs]
    assert all(s["world_size"] == 2 and "student_dir" in s for s in steps)


def test_a_sweep_through_the_submitit_local_launcher(tmp_path, tiny_corpus):
    out = sweep(tmp_path, tiny_corpus, "hydra/launcher=local_processes", "objective.alpha=0.3,0.7")
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "sweep" / ".submitit").is_dir()
    for job in ("0", "1"):
        assert (tmp_path / "sweep" / job / "results.json").is_file()


def test_two_optuna_trials_maximise_the_returned_retention(tmp_path, tiny_corpus):
    out = sweep(tmp_path, tiny_corpus, "hydra/sweeper=tune", "hydra.sweeper.n_trials=2", *PPL)
    assert out.returncode == 0, out.stderr[-3000:]
    best = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    values = [
        sweep_value(json.loads((tmp_path / "sweep" / j / "results.json").read_text()), "retention/mean")
        for j in ("0", "1")
    ]
    assert best["best_value"] == pytest.approx(max(values))
    assert set(best["best_params"]) == {"objective.terms.kd.temperature", "objective.alpha", "optimizer.lr"}


def test_sweep_value_reads_what_was_measured():
    results = {
        "retention": {"a/acc": 0.5, "a/acc_norm": 0.9, "b/ppl": 1.0, "c/x": None},
        "retention_mean": {"value": 0.75, "low": 0.6, "high": 0.8, "metrics": ["a/acc", "b/ppl"]},
        "student": {"a/acc": 0.2},
    }
    assert sweep_value(results, "retention/mean") == 0.75  # the primary metrics' mean, not every metric's
    assert sweep_value({"retention": {"a/acc": 0.5}}, "retention/mean") is None  # results without primaries
    assert sweep_value(results, "eval/a/acc") == 0.2
    with pytest.raises(DistillabError, match="sweep_metric: 'eval/zzz' was not measured"):
        sweep_value(results, "eval/zzz")


def test_fsdp2_shards_student_and_teacher_and_exports_the_gathered_student(tmp_path, tiny_corpus):
    import torch
    from transformers import AutoModelForCausalLM

    from distillab.models.student import drop_layers_student
    from distillab.models.tiny import build_tiny

    args = tiny_overrides(
        tmp_path,
        tiny_corpus,
        "logger=csv",
        "trainer=fsdp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.precision=32-true",
    )
    out = subprocess.run(
        [sys.executable, "-m", "distillab.distill", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        cwd=tmp_path,  # rank 1 re-runs the command with a Hydra run dir of its own: under outputs/ here
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["world_size"] == 2
    trained = AutoModelForCausalLM.from_pretrained(results["student_dir"])
    start = drop_layers_student(build_tiny("llama")[0], num_remove=2)
    changed = [
        name for name, p in trained.state_dict().items() if not torch.equal(p, start.state_dict()[name])
    ]
    assert len(changed) == len(start.state_dict())  # every gathered tensor was trained (none left at init)
