"""``distillab-prune`` end to end on a tiny Llama: layers (one-shot, iterative, resume), width, 2:4."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import compose_config
from transformers import AutoModelForCausalLM

from distillab.errors import DistillabError
from distillab.prune import run


def prune_overrides(run_dir, data_dir, *extra: str) -> list[str]:
    return [
        "model=tiny_llama",
        f"paths.run_dir={run_dir}",
        f"paths.data_dir={data_dir}",
        "calibration.data.source.files=corpus/tiny.jsonl",
        "calibration.data.block_size=32",
        "calibration.num_blocks=4",
        "calibration.batch_size=2",
        "heal.data.source.files=corpus/tiny.jsonl",
        "heal.data.block_size=32",
        "heal.data.batch_size=2",
        "heal.data.val_fraction=0.1",
        "heal.data.max_val_blocks=1",
        "heal.trainer.max_steps=2",
        "heal.trainer.val_check_interval=2",
        "heal.trainer.limit_val_batches=1",
        "eval=none",
        "logger=csv",
        "threads=1",
        "speed.compile=false",
        *extra,
    ]


def test_one_shot_layer_removal_heals_and_reloads(tmp_path, tiny_corpus):
    cfg = compose_config(prune_overrides(tmp_path, tiny_corpus, "prune.layers.num_remove=2"), "prune")
    results = run(cfg)
    assert len(results["removed_teacher_layers"]) == 2 and len(results["kept_teacher_layers"]) == 2
    assert "train/loss_hidden" in results["steps"][0]["heal"]  # healed with ild (KL + hidden)
    assert (
        results["train_tokens"] == 2 * 2 * 32 and results["train_seconds"] > 0
    )  # healing: steps x batch x block
    assert results["cost"]["flops"]["total"] == results["train_flops"]["total"] > 0  # the heal's FLOPs
    model = AutoModelForCausalLM.from_pretrained(results["student_dir"])
    assert model.config.num_hidden_layers == 2
    assert model.config.distillab_teacher_layers == results["kept_teacher_layers"]
    assert (tmp_path / "steps" / "step_01" / "scores.png").is_file()
    saved = json.loads((tmp_path / "scores.json").read_text())
    assert len(saved[0]["scores"]) == 4


def test_a_wall_clock_budget_stops_the_heal_before_max_steps(tmp_path, tiny_corpus):
    """heal.trainer.max_time ends the heal at the budget; the ledger counts the steps it trained, not
    max_steps (100,000 steps of the tiny model would take minutes; the budget is one second)."""
    extra = [
        "prune.layers.num_remove=2",
        "heal.trainer.max_steps=100000",
        "heal.trainer.val_check_interval=100000",
        "heal.trainer.max_time=00:00:00:01",
    ]
    results = run(compose_config(prune_overrides(tmp_path, tiny_corpus, *extra), "prune"))
    steps = results["train_tokens"] // (2 * 32)  # batch 2 x block 32
    assert 0 < steps < 100_000 and results["train_seconds"] >= 1.0


def test_iterative_removal_resumes_after_the_last_finished_step(tmp_path, tiny_corpus, monkeypatch):
    import distillab.prune as prune_app

    starts = []  # each healing phase continues the data stream where the previous phase stopped

    def recording_heal(*args, **kwargs):
        starts.append(args[-1])
        return heal(*args, **kwargs)

    heal = prune_app.heal
    monkeypatch.setattr(prune_app, "heal", recording_heal)
    extra = [
        "prune.layers.num_remove=2",
        "prune.layers.schedule=iterative",
        "prune.score=lens_kl",
        "prune.layers.lens_stride=1",
    ]
    first = run(compose_config(prune_overrides(tmp_path, tiny_corpus, *extra), "prune"))
    assert [len(s["scores"]) for s in first["steps"]] == [4, 3]  # rescored after each cut
    assert starts == [0, 2]  # heal.trainer.max_steps=2 batches per phase
    # simulate a crash during step 2: its completion marker is gone
    (tmp_path / "steps" / "step_02" / "step.json").unlink()
    step1 = (tmp_path / "steps" / "step_01" / "step.json").stat().st_mtime_ns
    again = run(compose_config(prune_overrides(tmp_path, tiny_corpus, *extra), "prune"))
    assert (tmp_path / "steps" / "step_01" / "step.json").stat().st_mtime_ns == step1  # not redone
    assert again["steps"][0] == first["steps"][0]
    assert again["kept_teacher_layers"] == first["kept_teacher_layers"]
    # the cost counts both healing phases, the resumed one too (2 steps x batch 2 x block 32 each)
    assert first["train_tokens"] == again["train_tokens"] == 2 * (2 * 2 * 32)


def test_an_interrupted_heal_resumes_from_its_checkpoint_with_identical_weights(
    tmp_path, tiny_corpus, monkeypatch
):
    """``heal.checkpoint_every``: a heal killed mid-way resumes from its last checkpoint (on the same
    cut only) and ends with the weights of an uninterrupted heal."""
    from test_resume import CrashAtStep

    import distillab.prune as prune_app

    heal = prune_app.heal
    crash: list = []  # callbacks added to the next heal

    def heal_with(*args, **kwargs):
        args = (*args[:6], (*args[6], *crash), *args[7:])  # heal(..., paths, callbacks, start, ...)
        return heal(*args, **kwargs)

    monkeypatch.setattr(prune_app, "heal", heal_with)
    extra = [
        "prune.layers.num_remove=2",
        "heal.trainer.max_steps=6",
        "heal.trainer.val_check_interval=6",
        "heal.trainer.deterministic=true",
        "heal.checkpoint_every=1",
    ]
    reference = run(compose_config(prune_overrides(tmp_path / "whole", tiny_corpus, *extra), "prune"))
    run_dir, step = tmp_path / "killed", tmp_path / "killed" / "steps" / "step_01"
    crash.append(CrashAtStep(4))
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(compose_config(prune_overrides(run_dir, tiny_corpus, *extra), "prune"))
    crash.clear()
    last = step / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=False)
    assert checkpoint["global_step"] == 4
    checkpoint["callbacks"]["Timer"]["time_elapsed"]["train"] = 1000.0  # proof it resumed, not retrained
    torch.save(checkpoint, last)
    kept = json.loads((step / "cut.json").read_text())
    (step / "cut.json").write_text(json.dumps({"kept_teacher_layers": [0, 1]}))  # another cut
    with pytest.raises(DistillabError, match="healing checkpoint was trained on"):
        run(compose_config(prune_overrides(run_dir, tiny_corpus, *extra), "prune"))
    (step / "cut.json").write_text(json.dumps(kept))
    resumed = run(compose_config(prune_overrides(run_dir, tiny_corpus, *extra), "prune"))
    assert resumed["train_tokens"] == reference["train_tokens"] == 6 * 2 * 32
    assert resumed["train_seconds"] > 1000.0  # the seconds before the kill are counted
    assert not (step / "checkpoints").exists()  # a finished step keeps its model, not its resume state
    whole = AutoModelForCausalLM.from_pretrained(reference["student_dir"]).state_dict()
    again = AutoModelForCausalLM.from_pretrained(resumed["student_dir"]).state_dict()
    assert all(torch.equal(again[k], v) for k, v in whole.items())


@pytest.mark.parametrize(
    "extra",
    [
        [
            "prune=width",
            "prune.score=wanda",
            "prune.width.num_attention_heads=2",
            "prune.width.intermediate_size=64",
        ],
        ["prune=unstructured", "prune.score=magnitude", "prune.unstructured.pattern=2:4"],
    ],
)
def test_width_and_sparse_pruning_heal_and_export(tmp_path, tiny_corpus, extra):
    results = run(compose_config(prune_overrides(tmp_path, tiny_corpus, *extra), "prune"))
    assert results["train_tokens"] == 2 * 2 * 32  # one healing phase: steps x batch x block
    model = AutoModelForCausalLM.from_pretrained(results["student_dir"])
    if "prune=width" in extra:
        assert model.config.num_attention_heads == 2 and model.config.intermediate_size == 64
        assert results["params"]["student"] < results["params"]["teacher"]
    else:  # healing kept the 2:4 zeros
        assert results["sparsity_after_heal"]["pruned_matrices"] == pytest.approx(0.5, abs=1e-3)
        w = model.model.layers[0].mlp.up_proj.weight
        assert ((w.reshape(w.shape[0], -1, 4) != 0).sum(-1) <= 2).all()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["prune.layers.num_remove=4"], "prune.layers.num_remove: 4 outside 1..3"),
        (
            ["prune.score=fisher"],
            "prune.score: 'fisher' is not a score for prune=layers; valid: block_influence",
        ),
        (
            ["prune=unstructured", "prune.score=wanda", "prune.unstructured.sparsity=1.0"],
            "prune.unstructured.sparsity: 1.0 is not valid; expected a number >= 0 and < 1",
        ),
        (
            ["prune=width", "prune.score=magnitude", "prune.width.num_attention_heads=3"],
            "prune.width.num_attention_heads: 3 does not keep grouped-query groups",
        ),
        (["prune._target_=distillab.pruning.methods.Slices"], "prune._target_: "),
        (
            ["+prune.layers.bogus=1", "prune.score=fisher"],
            "prune.score: 'fisher' is not a score for prune=layers",
        ),
    ],
)
def test_bad_prune_configs_fail_fast_with_the_key(tmp_path, tiny_corpus, extra, message):
    with pytest.raises(DistillabError) as err:
        run(compose_config(prune_overrides(tmp_path, tiny_corpus, *extra), "prune"))
    assert message in str(err.value)
    assert not (tmp_path / "results.json").exists()


def test_cli_error_is_one_line_and_exit_2(tmp_path, tiny_corpus):
    args = prune_overrides(tmp_path, tiny_corpus, "prune.layers.num_remove=9")
    out = subprocess.run([sys.executable, "-m", "distillab.prune", *args], capture_output=True, text=True)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1:] == [
        "error: prune.layers.num_remove: 9 outside 1..3 for a 4-layer model"
    ]


def test_layers_next_to_gaps():
    from distillab.training.heal import layers_next_to_gaps

    # teacher 0..5, layers 1 and 4 removed: student layers 0 (before 1), 1 (=2, after 1), 2 (=3, before 4), 3 (=5)
    assert layers_next_to_gaps([0, 2, 3, 5], 6) == [0, 1, 2, 3]
    assert layers_next_to_gaps([0, 1, 2, 3, 4], 6) == [4]  # last layer removed
    assert layers_next_to_gaps([0, 1, 2, 3, 4, 5], 6) == []


def test_healing_only_the_layers_next_to_gaps_leaves_the_others_untouched(tmp_path, tiny_corpus):
    extra = [
        "prune.layers.num_remove=1",
        "prune.layers.protect=[0,3]",
        "prune.score=block_influence",
        "heal.only_layers_next_to_gaps=true",
        "heal.objective.terms.hidden.weight=0",
    ]
    results = run(compose_config(prune_overrides(tmp_path, tiny_corpus, *extra), "prune"))
    from distillab.models.tiny import build_tiny
    from distillab.training.heal import layers_next_to_gaps

    original, _ = build_tiny("llama")
    healed = AutoModelForCausalLM.from_pretrained(results["student_dir"])
    kept = results["kept_teacher_layers"]  # 3 of 4 layers: layer 1 or 2 removed (0 and 3 protected)
    trained = set(layers_next_to_gaps(kept, 4))
    assert trained and len(trained) < len(kept)
    for i, t in enumerate(kept):
        same = torch.equal(
            healed.model.layers[i].mlp.up_proj.weight, original.model.layers[t].mlp.up_proj.weight
        )
        assert same == (i not in trained), (i, t)


def test_benchmark_drop_scores_layers_with_lm_eval(tmp_path, tiny_corpus):
    extra = [
        "prune.score=benchmark_drop",
        "prune.layers.num_remove=1",
        "heal.enabled=false",
        "prune.layers.removal.task=arc_challenge",
        "prune.layers.removal.metric=acc",
        "prune.layers.removal.limit=4",
    ]
    results = run(compose_config(prune_overrides(tmp_path, tiny_corpus, *extra), "prune"))
    scores = results["steps"][0]["scores"]
    assert len(scores) == 4 and all(-1.0 <= s <= 1.0 for s in scores)  # accuracy drops


def test_a_prune_sweep_runs_and_summarizes_into_a_table_and_plots(tmp_path, tiny_corpus):
    from distillab.report import main as report

    sweep = tmp_path / "sweep"
    args = [a for a in prune_overrides(tmp_path, tiny_corpus) if not a.startswith("paths.run_dir")]
    args += [
        f"hydra.sweep.dir={sweep}",
        "prune.layers.num_remove=1,2",
        "heal.enabled=false",
        "eval=none",
        "+eval.perplexity.wikitext2.source.format=text",
        "+eval.perplexity.wikitext2.source.files=wikitext2/wiki.test.raw",
        "+eval.perplexity.wikitext2.max_tokens=256",
        "+eval.perplexity.wikitext2.block_size=64",
    ]
    out = subprocess.run(
        [sys.executable, "-m", "distillab.prune", "-m", *args], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    plot = tmp_path / "params.png"
    report(
        [str(sweep), "--metrics", "wikitext2/ppl", "--plot-params", str(plot), "--out", str(tmp_path / "r")]
    )
    assert plot.is_file()
    rows = [json.loads((sweep / str(i) / "results.json").read_text()) for i in (0, 1)]
    assert [len(r["removed_teacher_layers"]) for r in rows] == [1, 2]
    assert rows[0]["params"]["student"] > rows[1]["params"]["student"]
    assert all("wikitext2/ppl" in r["retention"] for r in rows)


def test_a_failing_sweep_job_is_recorded_and_the_others_finish(tmp_path, tiny_corpus, capsys):
    from distillab.report import main as report

    sweep = tmp_path / "sweep"
    args = [a for a in prune_overrides(tmp_path, tiny_corpus) if not a.startswith("paths.run_dir")]
    args += [f"hydra.sweep.dir={sweep}", "prune.layers.num_remove=1,9,2", "heal.enabled=false"]
    out = subprocess.run(
        [sys.executable, "-m", "distillab.prune", "-m", *args], capture_output=True, text=True
    )
    assert out.returncode == 1  # the sweep reports its failure ...
    assert (sweep / "0" / "results.json").is_file() and (
        sweep / "2" / "results.json"
    ).is_file()  # ... after the rest ran
    failure = json.loads((sweep / "1" / "failure.json").read_text())
    assert failure["error"] == "DistillabError" and "prune.layers.num_remove" in failure["message"]
    assert "error: sweep job 1 failed: DistillabError: prune.layers.num_remove" in out.stderr
    assert json.loads((sweep / "failures.json").read_text())[0]["job"] == "1"
    report([str(sweep), "--metrics", "wikitext2/ppl", "--out", str(tmp_path / "r")])
    assert "| 1: FAILED | DistillabError: prune.layers.num_remove" in capsys.readouterr().out
