"""A whole distillation run on a tiny model: training, checkpoint contents, export, W&B files, resume."""

from __future__ import annotations

import json
import re

import pytest
import torch
from conftest import compose_config, tiny_overrides
from transformers import AutoModelForCausalLM

from distillab.distill import run
from distillab.errors import DistillabError
from distillab.models.tiny import build_tiny
from distillab.objectives.objective import build_objective
from distillab.training.distill_module import DistillModule


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_corpus):
    run_dir = tmp_path_factory.mktemp("run")
    cfg = compose_config(tiny_overrides(run_dir, tiny_corpus, "callbacks.checkpoint.every_n_train_steps=1"))
    return run(cfg), run_dir


def test_run_trains_logs_every_term_and_exports(finished_run):
    results, run_dir = finished_run
    assert {"train/loss", "train/loss_kd", "train/loss_ce", "val/loss_kd", "val/ppl"} <= set(
        results["train_metrics"]
    )
    student = AutoModelForCausalLM.from_pretrained(run_dir / "student")
    assert student.config.num_hidden_layers == 2 and student.config.distillab_teacher_layers == [0, 3]
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["params"]["student"] < saved["params"]["teacher"]
    header = (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "train/loss_kd" in header and "train/loss_ce" in header


def test_checkpoint_holds_the_student_and_never_the_teacher(finished_run):
    _, run_dir = finished_run
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    keys = list(ckpt["state_dict"])
    assert keys and all(k.startswith("student.") or k.startswith("objective.") for k in keys)
    assert not any("teacher" in k for k in keys)
    assert "teacher" not in json.dumps(ckpt.get("hyper_parameters", {}), default=str)
    assert sum("layers." in k and k.endswith("q_proj.weight") for k in keys) == 2  # student depth


def test_wandb_offline_files_are_written_once_per_job(finished_run):
    results, run_dir = finished_run
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    import wandb

    assert wandb.run is None  # finished: the next job of a sweep gets its own run


def test_teacher_is_frozen_in_eval_mode_and_not_a_submodule(tiny_corpus):
    teacher, _ = build_tiny("llama")
    student, _ = build_tiny("llama", seed=1)
    module = DistillModule(
        student,
        build_objective({"kd": {"_target_": "distillab.objectives.terms.SoftLabelKD", "weight": 1.0}}),
        teacher,
    )
    module.train()  # what Lightning does at fit start
    assert not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    assert all(k.startswith("student.") for k in module.state_dict())
    params = {id(p) for p in module.parameters()}
    assert not any(id(p) in params for p in teacher.parameters())


def test_resume_from_last_checkpoint_continues_the_step_count(finished_run, tiny_corpus):
    _, run_dir = finished_run
    cfg = compose_config(
        tiny_overrides(
            run_dir, tiny_corpus, "trainer.max_steps=3", "ckpt_path=last", "logger=csv", "export=false"
        )
    )
    results = run(cfg)
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert ckpt["global_step"] == 3 and results["train_tokens"] == 3 * 2 * 32  # steps x batch x block


def test_ce_only_objective_runs_without_teacher_forward(tmp_path, tiny_corpus):
    cfg = compose_config(tiny_overrides(tmp_path, tiny_corpus, "objective=ce", "logger=csv", "export=false"))
    results = run(cfg)
    assert "train/loss_ce" in results["train_metrics"] and "train/loss_kd" not in results["train_metrics"]


def test_fast_dev_run_one_batch(tmp_path, tiny_corpus):
    cfg = compose_config(
        tiny_overrides(tmp_path, tiny_corpus, "+trainer.fast_dev_run=1", "logger=csv", "export=false")
    )
    results = run(cfg)
    assert results["train_metrics"]["train/loss"] > 0


@pytest.mark.parametrize(
    "preset,terms",
    [
        ("ild", {"kd", "ce", "hidden"}),
        ("distill_lens", {"kd", "ce", "lens"}),
        ("multi_signal", {"kd", "ce", "hidden", "attention", "contrastive"}),
    ],
)
def test_objective_presets_train_end_to_end_and_log_every_term(preset, terms, tmp_path, tiny_corpus):
    extra = {
        "distill_lens": ["objective.terms.lens.num_pairs=1"],
        "multi_signal": ["objective.terms.contrastive.max_new_tokens=4"],
    }.get(preset, [])
    cfg = compose_config(
        tiny_overrides(tmp_path, tiny_corpus, f"objective={preset}", "logger=csv", "export=false", *extra)
    )
    results = run(cfg)
    logged = {k.removeprefix("train/loss_") for k in results["train_metrics"] if k.startswith("train/loss_")}
    assert logged == terms
    assert len(results["objective_summary"]) == len(terms)


def test_a_student_cut_by_a_layer_score_removes_the_lowest_scoring_layers(tmp_path, tiny_corpus):
    from distillab.models.surgery import evenly_spaced
    from distillab.pruning.calibration import batches, calibration_blocks
    from distillab.pruning.layer_scores import activation_layer_scores, least_important

    overrides = [o for o in tiny_overrides(tmp_path, tiny_corpus) if o != "student.score=null"]
    cfg = compose_config([*overrides, "student.score=block_influence", "student.calibration_blocks=4"])
    run(cfg)
    teacher, tokenizer = build_tiny("llama")
    data = {k: v for k, v in cfg.data.items()}
    calib = batches(calibration_blocks(tokenizer, data, 4, str(tiny_corpus), cfg.paths.cache_dir), 4)
    expected = least_important(
        activation_layer_scores(teacher, calib, ["block_influence"])["block_influence"], 2
    )
    kept = AutoModelForCausalLM.from_pretrained(tmp_path / "student").config.distillab_teacher_layers
    assert sorted(set(range(4)) - set(kept)) == expected
    assert expected != evenly_spaced(4, 2)  # else this test could not tell a score from the even cut


@pytest.mark.parametrize(
    "extra,message",
    [
        (
            ["student.score=ppl_drop"],
            "student.score: 'ppl_drop' is not a score for a student cut before distillation",
        ),
        (
            ["student.score=angular", "student.num_remove=4"],
            "student.num_remove: 4 with student.score=angular; valid: 1..3",
        ),
        (
            ["student.score=angular", "student.calibration_blocks=0"],
            "student.calibration_blocks: 0 is not valid; expected an integer >= 1",
        ),
        (
            ["student.score=angular", "student.calibration_blocks=100000"],
            "student.calibration_blocks: 100000 requested",
        ),
    ],
)
def test_bad_student_scores_are_one_line_errors(tmp_path, tiny_corpus, extra, message):
    from distillab.errors import DistillabError

    with pytest.raises(DistillabError, match=message.replace("(", r"\(")):
        run(compose_config([*tiny_overrides(tmp_path, tiny_corpus), *extra]))


def test_runs_keep_per_item_results_and_two_runs_compare_on_the_same_items(tmp_path, tiny_corpus, capsys):
    """Each run writes items/<model>/<set>.csv, retention with a paired interval and retention/mean over
    the primary metrics; the report CLI then answers "is B better than A?" from those items."""
    from distillab.evaluation import items
    from distillab.report import main as report

    evaluation = [
        "+eval.perplexity.tiny.source.files=corpus/tiny.jsonl",
        "+eval.perplexity.tiny.block_size=16",
        "+eval.perplexity.tiny.max_tokens=256",
        "logger=csv",
        "export=false",
    ]
    runs = {}
    for name, objective in (("a", "ce"), ("b", "kd")):
        results = run(
            compose_config(
                tiny_overrides(tmp_path / name, tiny_corpus, f"objective={objective}", *evaluation)
            )
        )
        runs[name] = tmp_path / name
        teacher = items.read_suite(runs[name] / "items" / "teacher")["tiny"]
        student = items.read_suite(runs[name] / "items" / "student")["tiny"]
        assert teacher["id"] == student["id"] and len(student["id"]) == 16  # 256 tokens / 16 per block
        assert items.score(student, "ppl") == pytest.approx(results["student"]["tiny/ppl"])
        low, high = results["retention_interval"]["tiny/ppl"]
        assert low <= results["retention"]["tiny/ppl"] <= high
        assert results["primary"] == ["tiny/ppl"]
        assert results["retention_mean"]["value"] == pytest.approx(results["retention"]["tiny/ppl"])
        assert results["train_tokens"] == 2 * 2 * 32  # steps x batch x block
        assert "★" in (runs[name] / "retention.md").read_text()
    capsys.readouterr()
    report(["--a", str(runs["a"]), "--b", str(runs["b"]), "--out", str(tmp_path / "report")])
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("| tiny/ppl | 16 |"))
    # the verdict follows the printed interval and the metric's direction (perplexity: lower is better)
    cells = [c.strip() for c in line.strip("|").split("|")]
    low, high = (float(v) for v in re.search(r"\[([-+\d.e]+), ([-+\d.e]+)\]", cells[4]).groups())
    expected = "within noise" if low <= 0 <= high else ("B better" if high < 0 else "A better")
    assert cells[-1] == expected, line


def test_a_constant_schedule_keeps_the_learning_rate(tmp_path, tiny_corpus):
    """scheduler=constant (the budget curves): every logged step trains at optimizer.lr; the default
    cosine schedule does not (so the check can fail)."""
    import csv

    from distillab.distill import run

    def learning_rates(name, *extra):
        run(
            compose_config(tiny_overrides(tmp_path / name, tiny_corpus, "export=false", "logger=csv", *extra))
        )
        rows = list(csv.DictReader((tmp_path / name / "csv" / "metrics.csv").open()))
        column = next(c for c in rows[0] if c.startswith("lr-"))
        return [float(r[column]) for r in rows if r.get(column)]

    constant = learning_rates("constant", "scheduler=constant", "trainer.max_steps=4")
    assert len(constant) >= 3 and all(lr == pytest.approx(2e-4) for lr in constant)
    cosine = learning_rates("cosine", "trainer.max_steps=4")
    assert len(set(cosine)) > 1


def test_the_untrained_student_gets_its_own_retention_with_intervals(tmp_path, tiny_corpus):
    """eval_before_training: the cut is scored on the same items, so its retention has a paired
    interval (results.json ``before_training``), the same as scoring it alone against the teacher."""
    from distillab.evaluation.items import read_suite
    from distillab.evaluation.retention import retention_rows
    from distillab.tracking.compare import collect

    perplexity = "{source: {format: jsonl, files: corpus/tiny.jsonl}, block_size: 16, max_tokens: 512}"
    cfg = compose_config(
        tiny_overrides(
            tmp_path, tiny_corpus, "eval_before_training=true", f"+eval.perplexity.tiny={perplexity}"
        )
    )
    results = run(cfg)
    before = results["before_training"]
    low, high = before["retention_interval"]["tiny/ppl"]
    assert low < before["retention"]["tiny/ppl"] < high
    alone = retention_rows(
        results["teacher"],
        results["student_before"],
        teacher_items=read_suite(tmp_path / "items" / "teacher"),
        student_items=read_suite(tmp_path / "items" / "student_before"),
    )
    assert [r.retention for r in alone if r.key == "tiny/ppl"] == [before["retention"]["tiny/ppl"]]
    assert before["retention_mean"]["low"] == pytest.approx(low)  # one task: the mean is its retention
    assert f"[{100 * low:.1f}, {100 * high:.1f}]" in (tmp_path / "retention.md").read_text()
    entries = collect([tmp_path])
    assert [e.tokens for e in entries] == [results["train_tokens"], 0]
    assert entries[1].label.endswith("(before training)") and entries[1].interval["tiny/ppl"] == [low, high]


@pytest.mark.parametrize(
    "objective,extra,runs",
    [
        ("ce", [], False),
        ("kd_cached", ["teacher_cache.enabled=true", "teacher_cache.k=8"], False),
        ("kd", [], True),  # the control: the same count sees the teacher when a term needs it
    ],
)
def test_the_teacher_runs_in_training_only_when_a_term_needs_it(
    objective, extra, runs, tmp_path, tiny_corpus, monkeypatch
):
    """ce and kd_cached train without a teacher forward pass (what makes them cheap): counted on the
    teacher's decoder, which every teacher path (whole model or hidden states only) runs through."""
    from distillab.training import distill_module

    calls = []
    freeze = distill_module.freeze

    def counting_freeze(model):
        model.base_model.register_forward_hook(lambda *_: calls.append(1))
        return freeze(model)

    monkeypatch.setattr(distill_module, "freeze", counting_freeze)
    overrides = tiny_overrides(
        tmp_path, tiny_corpus, f"objective={objective}", "logger=csv", "export=false", *extra
    )
    run(compose_config(overrides))
    assert bool(calls) == runs, f"{len(calls)} teacher forward passes during {objective} training"


@pytest.mark.parametrize("pad_labels", ["-100", "the pad id"])
def test_a_padded_batch_trains_on_exactly_the_next_tokens_of_real_tokens(pad_labels):
    """Known answer for the step's target shift and mask: position t is scored on token t + 1 only
    where both are real tokens (a padded row's last real position and its padding are not), CE is
    the mean over those positions and KD is T² · the mean forward KL over the same ones. The attention
    mask decides, whether or not the collator also set the padding's labels to -100."""
    import torch.nn.functional as F

    teacher, _ = build_tiny("llama", seed=0)
    student, _ = build_tiny("llama", seed=1)
    objective = build_objective(
        {
            "kd": {"_target_": "distillab.objectives.terms.SoftLabelKD", "weight": 0.5, "temperature": 2.0},
            "ce": {"_target_": "distillab.objectives.terms.HardLabelCE", "weight": 0.5},
        }
    )
    module = DistillModule(student, objective, teacher)
    ids = torch.tensor([[5, 9, 3, 7, 2, 8], [4, 6, 1, 3, 0, 0]])
    attention = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    labels = ids.masked_fill(attention == 0, -100) if pad_labels == "-100" else ids.clone()
    loss = module._step({"input_ids": ids, "attention_mask": attention, "labels": labels}, "train")

    with torch.no_grad():  # by hand, in float64: the real (position, next token) pairs
        s = student(input_ids=ids, attention_mask=attention).logits.double()
        t = teacher(input_ids=ids, attention_mask=attention).logits.double()
    pairs = [(0, p) for p in range(5)] + [(1, p) for p in range(3)]
    rows, cols = zip(*pairs, strict=True)
    s_pos, t_pos = s[list(rows), list(cols)], t[list(rows), list(cols)]
    targets = ids[list(rows), [c + 1 for c in cols]]
    ce = F.cross_entropy(s_pos, targets)
    p_t = F.softmax(t_pos / 2.0, -1)
    kl = (p_t * (F.log_softmax(t_pos / 2.0, -1) - F.log_softmax(s_pos / 2.0, -1))).sum(-1).mean()
    assert float(loss) == pytest.approx(float(0.5 * ce + 0.5 * 4.0 * kl), rel=1e-5)


def test_validation_perplexity_is_token_weighted_over_batches():
    """val/ppl = exp(Σ token NLL / Σ tokens) over the whole validation set: a short (padded) batch
    counts by its tokens, not as much as a full one (a mean of batch means would differ here)."""
    import math

    import torch.nn.functional as F

    student, _ = build_tiny("llama", seed=1)
    module = DistillModule(
        student, build_objective({"ce": {"_target_": "distillab.objectives.terms.HardLabelCE"}})
    )
    full = torch.tensor([[5, 9, 3, 7, 2, 8, 6, 1]])
    short = torch.tensor([[4, 6, 1, 0, 0, 0, 0, 0]])
    batches = [
        {"input_ids": full, "attention_mask": torch.ones_like(full), "labels": full},
        {
            "input_ids": short,
            "attention_mask": (short != 0).long(),
            "labels": short.masked_fill(short == 0, -100),
        },
    ]
    module.on_validation_epoch_start()
    for batch in batches:
        module._step(batch, "val")
    with torch.no_grad():
        nll_full = F.cross_entropy(
            student(input_ids=full).logits[0, :-1].double(), full[0, 1:], reduction="sum"
        )
        nll_short = F.cross_entropy(
            student(input_ids=short[:, :3]).logits[0, :-1].double(), short[0, 1:3], reduction="sum"
        )
    assert module._val_tokens == 7 + 2
    expected = float(nll_full + nll_short) / 9
    assert module._val_nll / module._val_tokens == pytest.approx(expected, rel=1e-5)
    batch_means = (float(nll_full) / 7 + float(nll_short) / 2) / 2
    assert not math.isclose(expected, batch_means, rel_tol=1e-3)  # the two weightings differ on these batches


def test_resuming_from_another_students_checkpoint_is_one_line(finished_run, tiny_corpus, tmp_path, capsys):
    """A checkpoint of another cut (2 of 4 layers removed there, 1 here) stops the resume with one
    line naming the checkpoint and what differs, exit 2; before, Lightning's state-dict traceback."""
    import shutil

    from distillab import distill

    _, run_dir = finished_run
    ckpt = tmp_path / "other.ckpt"
    shutil.copy(run_dir / "checkpoints" / "last.ckpt", ckpt)
    cfg = compose_config(
        tiny_overrides(
            tmp_path / "run", tiny_corpus, "student.num_remove=1", f"ckpt_path={ckpt}", "logger=csv"
        )
    )
    with pytest.raises(SystemExit) as exit_info:
        distill.main.__wrapped__(cfg)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert (
        len(lines) == 1 and f"ckpt_path: {ckpt} was written by another student (9 tensors missing" in lines[0]
    )


def test_a_fused_optimizers_gradients_are_clipped_like_lightning_would():
    """conf/optimizer/adamw.yaml is fused; Lightning refuses to clip for fused optimizers (fp16
    scaler reasons), so DistillModule clips itself where no scaler exists."""
    student, _ = build_tiny("llama")
    objective = build_objective({"ce": {"_target_": "distillab.objectives.terms.HardLabelCE", "weight": 1.0}})
    module = DistillModule(student, objective, None, optimizer=lambda p: torch.optim.AdamW(p, fused=True))
    optimizer = module.configure_optimizers()
    for p in student.parameters():
        p.grad = torch.full_like(p, 3.0)
    module.configure_gradient_clipping(optimizer, 1.0, "norm")
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in student.parameters()]))
    assert float(norm) == pytest.approx(1.0, rel=1e-4)
    module.configure_gradient_clipping(optimizer, 0.5, "value")
    assert max(float(p.grad.abs().max()) for p in student.parameters()) <= 0.5
    from types import SimpleNamespace

    module._trainer = SimpleNamespace(precision="16-mixed")  # fp16's scaler: fused + clipping refused
    with pytest.raises(DistillabError, match="optimizer.fused: true cannot clip gradients under"):
        module.configure_gradient_clipping(optimizer, 1.0, "norm")
    module._trainer = None


@pytest.mark.parametrize("kind", ["quantize_aware=gguf", "tuning=lora"])
def test_a_finished_quantization_aware_or_lora_run_resumes(tmp_path, tiny_corpus, kind):
    """The final ``last.ckpt`` holds the student as training saw it (parametrized weights, adapters),
    like the checkpoints saved during the run: resuming a finished run finds the same tensors."""
    extra = (kind, "logger=csv", "export=false")
    run(compose_config(tiny_overrides(tmp_path, tiny_corpus, *extra)))
    results = run(
        compose_config(tiny_overrides(tmp_path, tiny_corpus, *extra, "trainer.max_steps=3", "ckpt_path=last"))
    )
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert ckpt["global_step"] == 3 and results["train_tokens"] == 3 * 2 * 32
