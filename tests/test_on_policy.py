"""On-policy distillation: the student samples, the teacher scores exactly those samples."""

from __future__ import annotations

import pytest
import torch

from distillab.errors import DistillabError
from distillab.models.tiny import build_tiny
from distillab.objectives.objective import build_objective
from distillab.training.distill_module import DistillModule
from distillab.training.on_policy import OnPolicy


def _batch(tokenizer, rows: int = 2, length: int = 24) -> dict[str, torch.Tensor]:
    text = "Once upon a time there was a little model that wanted to learn from the teacher every day."
    ids = torch.tensor([tokenizer(text)["input_ids"][:length]] * rows)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def test_choices_follow_lambda_and_repeat_on_resume():
    half = OnPolicy(fraction=0.5, seed=3)
    picks = [half.chosen(step) for step in range(2000)]
    assert 900 < sum(picks) < 1100
    assert picks == [
        OnPolicy(fraction=0.5, seed=3).chosen(step) for step in range(2000)
    ]  # a function of (seed, step)
    assert not any(OnPolicy(fraction=0.0).chosen(s) for s in range(100))
    assert all(OnPolicy(fraction=1.0).chosen(s) for s in range(100))


def test_sample_continues_the_prompt_and_masks_it():
    student, tok = build_tiny("llama")
    student.train()
    batch = _batch(tok)
    torch.manual_seed(0)
    sampled, stats = OnPolicy(fraction=1.0, prompt_tokens=8, new_tokens=10).sample(
        student, batch, tok.pad_token_id, None
    )
    ids = sampled["input_ids"]
    assert ids.shape == (2, 18)
    assert torch.equal(ids[:, :8], batch["input_ids"][:, :8])
    assert (sampled["labels"][:, :8] == -100).all() and torch.equal(sampled["labels"][:, 8:], ids[:, 8:])
    assert not torch.equal(ids[:, 8:], batch["input_ids"][:, 8:18])  # the student's text, not the data's
    assert stats["generated_tokens"] == 20 and stats["generation_seconds"] > 0
    assert student.training  # sampled in eval mode, handed back in training mode


def test_the_models_own_generation_config_does_not_reshape_its_samples():
    student, tok = build_tiny("llama")
    own = student.generation_config
    own.suppress_tokens = [t for t in range(len(tok)) if t != 7]  # would make every sample token 7
    own.repetition_penalty = 5.0
    torch.manual_seed(0)
    sampled, _ = OnPolicy(fraction=1.0, prompt_tokens=8, new_tokens=12).sample(
        student, _batch(tok), tok.pad_token_id, None
    )
    assert (sampled["input_ids"][:, 8:] != 7).any()
    assert student.generation_config is own and own.repetition_penalty == 5.0  # handed back


def test_tokens_after_a_sampled_eos_are_masked():
    student, tok = build_tiny("llama")
    # row 0 samples EOS at once; row 1 samples freely
    eos_bias = torch.zeros(len(tok))
    eos_bias[tok.eos_token_id] = 1e4

    def force_eos_in_row_0(module, args, out):
        out = out.clone()
        out[0] += eos_bias
        return out

    student.lm_head.register_forward_hook(force_eos_in_row_0)
    torch.manual_seed(0)
    sampled, stats = OnPolicy(fraction=1.0, prompt_tokens=8, new_tokens=5).sample(
        student, _batch(tok), tok.pad_token_id, tok.eos_token_id
    )
    ids, labels, attention = sampled["input_ids"], sampled["labels"], sampled["attention_mask"]
    assert ids.shape == (2, 13) and ids[0, 8] == tok.eos_token_id
    assert tok.eos_token_id not in ids[1, 8:].tolist()
    assert stats["generated_tokens"] == 1 + 5  # row 0: its EOS; row 1: five tokens
    assert (
        labels[0, 8] == tok.eos_token_id and (labels[0, 9:] == -100).all() and (attention[0, 9:] == 0).all()
    )
    assert torch.equal(labels[1, 8:], ids[1, 8:]) and (attention[1] == 1).all()


@pytest.mark.parametrize("teacher_arch", ["llama", "llama+sp"])
def test_the_teacher_scores_the_students_own_samples(teacher_arch):
    student, tok = build_tiny("llama")
    teacher, teacher_tok = build_tiny(teacher_arch, seed=1)
    objective_cfg = (
        {
            "kd": {"_target_": "distillab.objectives.terms.SoftLabelKD", "weight": 0.5},
            "ce": {"_target_": "distillab.objectives.terms.HardLabelCE", "weight": 0.5},
        }
        if teacher_arch == "llama"
        else {
            "cross_kd": {
                "_target_": "distillab.objectives.cross_tokenizer.CrossTokenizerKD",
                "weight": 0.5,
                "loss": "uld",
            },
            "ce": {"_target_": "distillab.objectives.terms.HardLabelCE", "weight": 0.5},
        }
    )
    objective = build_objective(objective_cfg)
    aligner = None
    if teacher_arch != "llama":
        from distillab.data.token_alignment import TokenAligner

        objective.attach_tokenizers(tok, teacher_tok)
        aligner = TokenAligner(tok, teacher_tok)
    module = DistillModule(
        student,
        objective,
        teacher,
        aligner=aligner,
        on_policy=OnPolicy(fraction=1.0, prompt_tokens=8, new_tokens=6),
        student_tokenizer=tok,
    )
    seen: dict[str, torch.Tensor] = {}
    sample = module.on_policy.sample

    def recording_sample(*args, **kwargs):
        out = sample(*args, **kwargs)
        seen["sampled"] = out[0]["input_ids"]
        return out

    module.on_policy.sample = recording_sample
    target = teacher.base_model  # kd and cross_kd both run the teacher up to its final hidden states
    target.register_forward_pre_hook(
        lambda m, args, kwargs: seen.update(ids=kwargs["input_ids"]), with_kwargs=True
    )
    logged: dict[str, float] = {}
    module.log = lambda name, value, **kw: logged.__setitem__(name, float(torch.as_tensor(value).detach()))
    student.train()
    loss = module.training_step(_batch(tok), 0)
    assert torch.isfinite(loss)
    assert logged["train/on_policy"] == 1.0 and logged["train/generated_tokens"] == 12
    assert "train/loss_ce" not in logged  # no cross-entropy on the student's own samples
    sampled = seen["sampled"]
    if teacher_arch == "llama":
        assert torch.equal(seen["ids"], sampled)
    else:  # the teacher read its own encoding of the student's sampled text (random bytes of the tiny
        # student decode to U+FFFD, which the tiny teacher tokenizer, without byte fallback, reads as <unk>)
        for row, teacher_row in zip(sampled, seen["ids"], strict=True):
            student_text = tok.decode(row, skip_special_tokens=True).replace("\ufffd", "")
            assert teacher_tok.decode(teacher_row, skip_special_tokens=True) == student_text


def test_bad_on_policy_settings_name_the_key():
    with pytest.raises(DistillabError, match=r"on_policy.fraction: must be in \[0, 1\]"):
        OnPolicy(fraction=1.5)
    with pytest.raises(DistillabError, match="on_policy.new_tokens: must be >= 1"):
        OnPolicy(fraction=0.5, new_tokens=0)


def test_an_on_policy_run_trains_and_logs_generation(tiny_corpus, tmp_path):
    from distillab.distill import run
    from tests.conftest import compose_config, tiny_overrides

    cfg = compose_config(
        tiny_overrides(
            tmp_path / "run",
            tiny_corpus,
            "on_policy.fraction=1.0",
            "on_policy.prompt_tokens=16",
            "on_policy.new_tokens=8",
            "export=false",
        )
    )
    results = run(cfg)
    assert results["train_metrics"]["train/on_policy"] == 1.0
    assert results["train_metrics"]["train/generated_tokens"] > 0
    steps, rows = cfg.trainer.max_steps, cfg.data.batch_size
    # the budget counts the sampled tokens trained on (<= 8 per row), not whole blocks
    assert 0 < results["train_tokens"] <= steps * rows * 8 < steps * rows * cfg.data.block_size
    totals = results["on_policy"]  # every step sampled (fraction 1): the totals cover all of them
    assert totals["sampled_steps"] == steps
    assert totals["generated_tokens"] == results["train_tokens"]
    assert totals["generation_seconds"] > 0


def test_on_policy_needs_a_teacher_term_and_room_for_the_prompt(tiny_corpus, tmp_path):
    from distillab.distill import run
    from tests.conftest import compose_config, tiny_overrides

    for extra, message in (
        (["objective=ce", "on_policy.fraction=0.5"], "on_policy.fraction: > 0 needs a teacher term"),
        (
            ["on_policy.fraction=0.5", "on_policy.prompt_tokens=32"],
            "on_policy.prompt_tokens: 32 leaves no room",
        ),
    ):
        with pytest.raises(DistillabError, match=message):
            run(compose_config(tiny_overrides(tmp_path / "run", tiny_corpus, *extra)))


def test_generation_totals_survive_a_checkpoint():
    student, tok = build_tiny("llama")
    teacher, _ = build_tiny("llama", seed=1)
    objective = build_objective({"kd": {"_target_": "distillab.objectives.terms.SoftLabelKD", "weight": 1.0}})

    def module():
        return DistillModule(
            student, objective, teacher, on_policy=OnPolicy(fraction=1.0), student_tokenizer=tok
        )

    before = module()
    before.generation |= {"sampled_steps": 3, "generated_tokens": 120, "generation_seconds": 4.5}
    checkpoint: dict = {}
    before.on_save_checkpoint(checkpoint)
    after = module()
    after.on_load_checkpoint(checkpoint)
    assert after.generation == {"sampled_steps": 3, "generated_tokens": 120, "generation_seconds": 4.5}
    old = module()  # a checkpoint written before the totals existed starts them at zero
    old.on_load_checkpoint({"distillab_trained_tokens": 10})
    assert old.generation["sampled_steps"] == 0 and old.trained_tokens == 10
