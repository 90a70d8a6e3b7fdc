"""Precision: auto-detection, the run's trainer precision, float32 vocabulary math under bf16
autocast, every objective preset in bf16 against float32, and precision-keyed teacher caches."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from distillab import precision
from distillab.config import configure_precision, to_plain
from distillab.distill import run as distill_run
from distillab.errors import DistillabError
from distillab.evaluation.suite import cached_evaluate_suite
from distillab.machine import one_line
from distillab.models.student import drop_layers_student
from distillab.models.tiny import build_tiny
from distillab.objectives.divergences import _forward_kl_from_logits, forward_kl_from_logits
from distillab.objectives.objective import build_objective
from distillab.objectives.terms import soft_label_kd
from distillab.training.distill_module import DistillModule
from tests.conftest import compose_config, tiny_overrides

BF16 = precision.Precision("bf16", "cpu", "test", "bf16")
FP32 = precision.Precision("float32", "cpu", "test", "float32")


def _cpu_features(monkeypatch, avx512_bf16: bool, amx: bool = False):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)


def test_auto_is_bf16_only_where_the_cpu_runs_it(monkeypatch):
    _cpu_features(monkeypatch, avx512_bf16=False)
    chosen = precision.resolve_precision("auto", "cpu")
    assert chosen.name == "float32" and "neither AVX512-BF16 nor AMX" in chosen.reason
    _cpu_features(monkeypatch, avx512_bf16=True)
    chosen = precision.resolve_precision("auto", "cpu")
    assert chosen.name == "bf16" and "AVX512-BF16" in chosen.reason
    assert chosen.trainer_precision == "bf16-mixed"
    _cpu_features(monkeypatch, avx512_bf16=False, amx=True)
    assert precision.resolve_precision(None, "cpu").name == "bf16"


def test_explicit_settings_win_and_bad_ones_are_refused(monkeypatch):
    _cpu_features(monkeypatch, avx512_bf16=True)
    assert precision.resolve_precision("float32", "cpu").name == "float32"
    _cpu_features(monkeypatch, avx512_bf16=False)
    assert precision.resolve_precision("bf16", "cpu").name == "bf16"  # emulated, warned, but as asked
    with pytest.raises(DistillabError, match="precision: 'fp8' is not one of auto, bf16, float32"):
        precision.resolve_precision("fp8", "cpu")


def test_the_run_precision_fills_trainer_blocks_and_refuses_contradictions(
    tmp_path, tiny_corpus, monkeypatch
):
    _cpu_features(monkeypatch, avx512_bf16=True)
    cfg = compose_config(tiny_overrides(tmp_path, tiny_corpus))
    assert cfg.trainer.precision is None and cfg.precision == "auto"
    resolved = configure_precision(cfg)
    assert resolved.name == "bf16" and cfg.trainer.precision == "bf16-mixed"
    assert precision.current().name == "float32"  # outside a run
    with precision.running(resolved):
        assert precision.current().name == "bf16"
    assert precision.current().name == "float32"

    prune_cfg = compose_config(["model=tiny_llama", "precision=float32"], "prune")
    configure_precision(prune_cfg)
    assert prune_cfg.heal.trainer.precision == "32-true"

    explicit = compose_config(tiny_overrides(tmp_path, tiny_corpus, "trainer.precision=bf16-true"))
    configure_precision(explicit)  # auto + an explicit trainer precision: kept
    assert explicit.trainer.precision == "bf16-true"
    clash = compose_config(
        tiny_overrides(tmp_path, tiny_corpus, "precision=float32", "trainer.precision=bf16-mixed")
    )
    with pytest.raises(
        DistillabError, match=r"trainer.precision: 'bf16-mixed' contradicts precision=float32"
    ):
        configure_precision(clash)


def test_fused_forward_kl_stays_float32_under_bf16_autocast():
    g = torch.Generator().manual_seed(0)
    teacher, student = torch.randn(2, 16, 500, generator=g) * 4, torch.randn(2, 16, 500, generator=g) * 4
    reference = forward_kl_from_logits(teacher, student, 2.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = forward_kl_from_logits(teacher, student, 2.0)
        # what the function did before: its two products ran in bf16 (this test's reason to exist)
        unguarded = _forward_kl_from_logits(teacher, student, 2.0)
    torch.testing.assert_close(under_autocast, reference, rtol=0, atol=1e-6)
    assert (unguarded - reference).abs().max() > 1e-3


def test_soft_label_kd_is_float32_under_bf16_autocast():
    """The KD term as objectives use it (fused forward KL inside): same value with autocast on."""
    g = torch.Generator().manual_seed(1)
    t, s = torch.randn(2, 8, 97, generator=g) * 6, torch.randn(2, 8, 97, generator=g) * 6
    mask = torch.ones(2, 8, dtype=torch.bool)
    reference = soft_label_kd(t, s, mask, 2.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = soft_label_kd(t, s, mask, 2.0)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, reference, rtol=0, atol=1e-6)


# Tolerance of a whole objective in bf16 against float32 on the tiny models: the models' forward
# passes run in bf16 (8-bit mantissa, ~0.4% per rounding), the losses in float32. Measured
# (2026-11-29): kd 1.7e-5, ce 2.1e-5, ild 1.3e-4, distill_lens 1.7e-5, multi_signal 1.9e-4.
PRESET_RTOL = 1e-3


@pytest.mark.parametrize("preset", ["kd", "ce", "ild", "distill_lens", "multi_signal"])
def test_each_objective_preset_in_bf16_is_within_tolerance_of_float32(preset):
    teacher, tokenizer = build_tiny("llama", seed=0, num_hidden_layers=8)
    student = drop_layers_student(teacher, num_remove=2)
    cfg = compose_config([f"objective={preset}"])
    terms = to_plain(cfg.objective.terms)
    terms.pop("contrastive", None)  # samples fresh responses each call: not comparable run to run
    ids = torch.randint(0, len(tokenizer), (2, 24), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    module = DistillModule(student, build_objective(terms), teacher)
    module.log = lambda *args, **kwargs: None  # no Trainer here; _step logs its terms
    with torch.no_grad():
        reference = module._step(batch, "train")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            value = module._step(batch, "train")
    assert value.dtype == torch.float32
    relative = abs(float(value) - float(reference)) / abs(float(reference))
    print(f"{preset}: relative difference {relative:.2e}")
    assert relative < PRESET_RTOL, f"{preset}: bf16 {float(value):.5f} vs float32 {float(reference):.5f}"


def test_a_bf16_run_trains_in_bf16_mixed_and_records_it(tmp_path, tiny_corpus):
    results = distill_run(compose_config(tiny_overrides(tmp_path, tiny_corpus, "precision=bf16")))
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["precision"]["name"] == "bf16" and saved["precision"]["setting"] == "bf16"
    assert saved["precision"]["train"] == "bf16-mixed"
    assert "precision: bf16; training bf16-mixed" in (tmp_path / "retention.md").read_text()
    # the config every logger got (W&B's offline run keeps it in its binary file; the CSV logger's copy)
    logged = OmegaConf.load(tmp_path / "csv" / "hparams.yaml")
    assert logged.precision == "bf16" and logged.precision_train == "bf16-mixed"
    assert logged.machine == one_line(saved["machine"])  # and where it ran, in both
    assert torch.isfinite(torch.tensor(results["train_metrics"]["train/loss"]))
    # bf16-mixed keeps float32 master weights: the exported student is a float32 model
    assert json.loads((tmp_path / "student" / "config.json").read_text())["dtype"] == "float32"


def test_teacher_evaluations_are_cached_per_precision(tmp_path, tiny_corpus):
    model, tokenizer = build_tiny("llama")
    eval_cfg = {
        "perplexity": {
            "corpus": {
                "source": {"format": "jsonl", "files": "corpus/tiny.jsonl"},
                "block_size": 32,
                "max_tokens": 64,
            }
        }
    }
    cache = tmp_path / "cache"
    first, hit = cached_evaluate_suite(model, tokenizer, eval_cfg, tmp_path, str(tiny_corpus), cache, FP32)
    assert not hit
    again, hit = cached_evaluate_suite(model, tokenizer, eval_cfg, tmp_path, str(tiny_corpus), cache, FP32)
    assert hit and again == first
    in_bf16, hit = cached_evaluate_suite(model, tokenizer, eval_cfg, tmp_path, str(tiny_corpus), cache, BF16)
    assert not hit
    assert in_bf16.metrics["corpus/ppl"] == pytest.approx(first.metrics["corpus/ppl"], rel=0.02)
    assert in_bf16.metrics["corpus/ppl"] != first.metrics["corpus/ppl"]  # it really ran under bf16 autocast


def test_a_float32_student_learns_from_a_bf16_teacher(tmp_path, tiny_corpus):
    """precision=bf16 with trainer.precision=32-true: the teacher's forward under bf16 autocast, the
    student's in float32; every objective preset's tensors meet (hidden states, q/k, logits)."""
    for preset in ("kd", "multi_signal"):
        run_dir = tmp_path / preset
        overrides = tiny_overrides(
            run_dir, tiny_corpus, "precision=bf16", "trainer.precision=32-true", f"objective={preset}"
        )
        results = distill_run(compose_config(overrides))
        assert torch.isfinite(torch.tensor(results["train_metrics"]["train/loss"])), preset
        assert json.loads((run_dir / "results.json").read_text())["precision"]["name"] == "bf16"


def test_work_on_another_device_is_bf16_only_where_that_device_runs_it(monkeypatch):
    """A GPU run evaluates its models on the CPU after training: bf16 there only if the CPU has it."""
    gpu_run = precision.Precision("bf16", "cuda", "auto: a bf16 GPU", "auto")
    _cpu_features(monkeypatch, avx512_bf16=False)
    on_cpu = gpu_run.on("cpu")
    assert on_cpu.name == "float32" and "on cpu" in on_cpu.reason
    assert isinstance(gpu_run.autocast("cpu"), type(precision.Precision().autocast()))  # no autocast
    _cpu_features(monkeypatch, avx512_bf16=True)
    assert gpu_run.on("cpu").name == "bf16"
    asked = precision.Precision("bf16", "cuda", "asked", "bf16")
    _cpu_features(monkeypatch, avx512_bf16=False)
    assert isinstance(asked.autocast("cpu"), torch.autocast)  # asked explicitly: as asked


def test_linear_weights_cast_once_gives_autocast_values_and_restores_the_model():
    model, _ = build_tiny("llama")
    ids = torch.randint(0, model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        reference = model(input_ids=ids).logits
        with precision.linear_weights_cast_once(model):
            assert any("forward" in vars(m) for m in model.modules())  # the casts are in place
            held = model(input_ids=ids).logits
    assert torch.equal(held, reference)  # autocast rounds the weights to the same values
    assert not any("forward" in vars(m) for m in model.modules())
    with precision.linear_weights_cast_once(model):  # outside autocast: nothing is patched
        assert not any("forward" in vars(m) for m in model.modules())


@pytest.mark.parametrize("run", [BF16, FP32], ids=["bf16 run", "float32 run"])
def test_a_frozen_forward_outside_the_runs_precision_fails_loudly(run):
    """A forward pass added without ceremony (no in_run_precision, no autocast) cannot silently run
    in another precision than the run's: inside a run it raises, naming the model and the fix."""
    model, _ = build_tiny("llama", seed=0)
    model.requires_grad_(False)
    ids = torch.tensor([[3, 5, 7]])
    other = torch.autocast("cpu", dtype=torch.bfloat16, enabled=not run.is_bf16)
    with precision.running(run):
        with pytest.raises(precision.PrecisionBypass, match="LlamaForCausalLM ran in .* precision there is"):
            with other:
                model(input_ids=ids)
        with precision.current().autocast("cpu"):  # the ceremony: passes
            logits = model(input_ids=ids).logits
        assert (logits.dtype == torch.bfloat16) == run.is_bf16

        @precision.in_run_precision
        def score(m):
            return m(input_ids=ids).logits

        assert (score(model).dtype == torch.bfloat16) == run.is_bf16
        model.model.embed_tokens.weight.requires_grad_(True)  # a model that trains: the trainer decides
        with other:
            model(input_ids=ids)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model.requires_grad_(False)
        model(input_ids=ids)  # outside a run: library use, nothing checked


def test_an_app_runs_inside_its_precision_and_restores_the_outer_one(tmp_path, tiny_corpus, monkeypatch):
    seen = []
    original = DistillModule.on_fit_start

    def spy(self):
        seen.append(precision.current().name)
        original(self)

    monkeypatch.setattr(DistillModule, "on_fit_start", spy)
    distill_run(compose_config(tiny_overrides(tmp_path, tiny_corpus, "precision=bf16")))
    assert seen == ["bf16"] and precision.current().name == "float32"


def test_an_input_cast_is_reused_only_while_the_same_tensor_is_unchanged():
    last = precision._LastCast()
    x = torch.randn(3, 4)
    first = last.of(x, torch.bfloat16)
    assert last.of(x, torch.bfloat16) is first  # q, k, v read the same activations
    x.add_(1.0)  # changed in place: cast again
    assert torch.equal(last.of(x, torch.bfloat16), x.bfloat16())
    assert last.of(x.clone(), torch.bfloat16) is not first and last.of(first, torch.bfloat16) is first
