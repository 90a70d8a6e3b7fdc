"""Quantization-aware healing: fake quantization equals the GGUF export's own quantizer bit for bit,
its gradient passes straight through, and a run trains on it and ends with its float weights."""

from __future__ import annotations

import sys

import gguf
import numpy as np
import pytest
import torch
from conftest import compose_config, tiny_overrides

from distillab.compiling import compiling
from distillab.errors import DistillabError
from distillab.models.tiny import build_tiny
from distillab.quantization import fake_quant
from distillab.quantization.fake_quant import FORMATS, QuantizeAware, fake_quantize, from_config

GGUF_TYPES = {name: getattr(gguf.GGMLQuantizationType, name.upper()) for name in FORMATS}


def _weights() -> torch.Tensor:
    """Random rows, and the blocks a quantizer gets wrong first: zeros, a constant, ± ties of the
    largest magnitude, a half-way value, tiny and large scales."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(24, 96, generator=g) * 0.05
    w[0, :32] = 0.0
    w[1, :32] = 0.37
    w[2, :32] = torch.linspace(-1.0, 1.0, 32)  # -1 and +1: which one sets q4_0's scale
    w[3, :32] = torch.tensor([0.5, -0.5] * 16)
    w[4] *= 1e-6
    w[5] *= 1e3
    return w


@pytest.mark.parametrize("mode", ["false", "auto"], ids=["eager", "compiled"])
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_fake_quantization_equals_the_gguf_quantizer_bit_for_bit(fmt, mode):
    w = _weights()
    qtype = GGUF_TYPES[fmt]
    reference = gguf.quants.dequantize(gguf.quants.quantize(w.numpy(), qtype), qtype)
    with compiling(mode):
        ours = fake_quantize(w, fmt)
    assert fake_quant._checked.get(fmt, True)  # compiled: its first result equalled eager's
    assert ours.dtype == torch.float32 and ours.shape == w.shape
    assert np.array_equal(ours.numpy().view(np.uint32), reference.view(np.uint32))  # every bit
    assert not torch.equal(ours, w)  # it did quantize
    again = fake_quantize(ours, fmt)  # weights on the grid stay (nearly all) on it
    assert (again == ours).float().mean() > 0.99


def test_rows_that_do_not_fill_blocks_are_fp16_and_vectors_stay():
    w = torch.randn(4, 40)  # 40 is not a multiple of 32: the export writes f16
    assert torch.equal(fake_quantize(w, "q4_0"), w.half().float())
    v = torch.randn(64)
    assert torch.equal(fake_quantize(v, "q4_0"), v)


def test_the_gradient_passes_straight_through():
    model, _ = build_tiny("llama")
    layer = model.model.layers[0].mlp.up_proj
    x = torch.randn(3, layer.in_features)
    aware = QuantizeAware("q4_1")
    with aware.applied(model):
        out = layer(x)
        torch.testing.assert_close(out, x @ fake_quantize(layer.weight, "q4_1").T)  # forward: quantized
        out.sum().backward()
        grad = layer.parametrizations.weight.original.grad
    torch.testing.assert_close(grad, torch.ones(3, layer.out_features).T @ x)  # d/dW of x·Wq as of x·W


def test_the_quantized_copy_follows_every_optimizer_step():
    """The copy is kept between forwards, and made again after the fused AdamW changes the weight."""
    model, _ = build_tiny("llama")
    layer = model.model.layers[0].mlp.up_proj
    x = torch.randn(3, layer.in_features)
    with QuantizeAware("q8_0").applied(model):
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=True)
        for _ in range(2):
            layer(x).pow(2).sum().backward()
            optimizer.step()
            optimizer.zero_grad()
            latent = layer.parametrizations.weight.original
            torch.testing.assert_close(layer.weight, fake_quantize(latent, "q8_0"), rtol=0, atol=0)


def test_applied_quantizes_every_exported_weight_and_restores_the_model():
    model, _ = build_tiny("llama")
    model.config.tie_word_embeddings = True
    model.tie_weights()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = {id(p) for p in model.parameters()}
    ids = torch.randint(0, model.config.vocab_size, (2, 8), generator=torch.Generator().manual_seed(1))
    reference = build_tiny("llama")[0]
    reference.load_state_dict(before)
    with torch.no_grad():
        for p in reference.parameters():
            if p.dim() == 2:
                p.copy_(fake_quantize(p, "q8_0"))
        with QuantizeAware("q8_0").applied(model):
            torch.testing.assert_close(model(input_ids=ids).logits, reference(input_ids=ids).logits)
    after = model.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], before[k]) for k in before)
    assert {id(p) for p in model.parameters()} == params  # the optimizer's parameters, untouched
    assert model.lm_head.weight is model.model.embed_tokens.weight  # still tied


def test_a_bad_format_is_one_line_naming_the_key():
    with pytest.raises(
        DistillabError, match=r"^heal.quantize_aware.format: 'q3_k' is not valid; valid: q8_0"
    ):
        from_config({"_target_": "x", "format": "q3_k"}, "heal.quantize_aware")
    assert from_config(None) is None
    with pytest.raises(
        DistillabError, match=r"valid: q8_0 \| q4_0 \| q4_1 \| q5_0 \| q5_1 \| q2_k \| q3_k_s"
    ):
        from_config({"_target_": "x", "format": "q4_2"})  # llama.cpp's mixes are formats too


def test_a_llama_cpp_mix_without_the_runtime_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # `import llama_cpp` raises ImportError
    with pytest.raises(DistillabError, match=r"^quantize_aware.format=q4_k_m: needs llama.cpp; make install"):
        QuantizeAware("q4_k_m")


def test_a_quantization_aware_run_trains_on_the_grid_and_exports_its_float_weights(
    tiny_corpus, tmp_path, monkeypatch
):
    from distillab.distill import run

    calls = []
    original = fake_quant.StraightThrough.forward
    monkeypatch.setattr(
        fake_quant.StraightThrough, "forward", lambda self, w: calls.append(1) or original(self, w)
    )
    cfg = compose_config(
        tiny_overrides(
            tmp_path, tiny_corpus, "quantize_aware=gguf", "quantize_aware.format=q4_0", *TINY_PERPLEXITY
        )
    )
    results = run(cfg)
    assert results["quantize_aware"] == "q4_0" and calls  # the training forwards went through it
    from transformers import AutoModelForCausalLM

    student = AutoModelForCausalLM.from_pretrained(results["student_dir"])
    assert not any("parametrizations" in k for k in student.state_dict())  # plain names in the export
    w = student.model.layers[0].mlp.up_proj.weight
    assert not torch.equal(w, fake_quantize(w, "q4_0"))  # the latent float weights, not the grid
    _assert_scored_on_the_grid(results, student, cfg, "q4_0", tmp_path)


TINY_PERPLEXITY = (
    "+eval.perplexity.tiny.source.files=corpus/tiny.jsonl",
    "+eval.perplexity.tiny.block_size=16",
)


def _assert_scored_on_the_grid(results, student, cfg, fmt, tmp_path):
    """The run's student score is its exported float weights' score on the ``fmt`` grid (what the
    GGUF file will hold), not the float weights' own."""
    from transformers import AutoTokenizer

    from distillab.evaluation.suite import evaluate_suite
    from distillab.precision import resolve_precision

    tokenizer = AutoTokenizer.from_pretrained(results["student_dir"])
    in_run = resolve_precision(cfg.precision)  # the precision the run scored in

    def score(model) -> float:
        folder, data = tmp_path / "again", cfg.paths.data_dir
        return evaluate_suite(model, tokenizer, cfg.eval, folder, data, in_run).metrics["tiny/nll"]

    with fake_quant.as_stored(student, QuantizeAware(fmt)):
        on_grid = score(student)
    run_score, latent = results["student"]["tiny/nll"], score(student)
    assert run_score == pytest.approx(on_grid, rel=1e-6) and run_score != pytest.approx(latent, rel=1e-4)


def test_a_prune_run_healed_on_the_grid_is_scored_on_it(tiny_corpus, tmp_path):
    from test_prune_run import prune_overrides
    from transformers import AutoModelForCausalLM

    from distillab.prune import run

    extra = ["prune.layers.num_remove=2", "heal.enabled=true", "quantize_aware@heal.quantize_aware=gguf", "heal.quantize_aware.format=q4_1", *TINY_PERPLEXITY]  # fmt: skip
    cfg = compose_config(prune_overrides(tmp_path, tiny_corpus, *extra), "prune")
    results = run(cfg)
    student = AutoModelForCausalLM.from_pretrained(results["student_dir"])
    _assert_scored_on_the_grid(results, student, cfg, "q4_1", tmp_path)


def test_evaluation_casts_the_grid_weights_once_with_the_same_values():
    """Scoring on the grid keeps evaluation's cast-once of linear weights (precision.py): ``as_stored``
    leaves plain Linear layers holding the grid, cast once, and the logits equal autocast's own."""
    from distillab.precision import linear_weights_cast_once

    model, _ = build_tiny("llama")
    ids = torch.randint(0, model.config.vocab_size, (2, 8), generator=torch.Generator().manual_seed(2))
    layer = model.model.layers[0].mlp.up_proj
    with torch.no_grad(), fake_quant.as_stored(model, QuantizeAware("q4_1")):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            reference = model(input_ids=ids).logits
            with linear_weights_cast_once(model):
                assert "forward" in vars(layer)  # patched: its own cast copy of the grid
                assert torch.equal(layer.weight, fake_quantize(layer.weight, "q4_1"))  # on the grid
                patched = model(input_ids=ids).logits
    assert torch.equal(patched, reference)


def test_a_tied_model_is_scored_on_the_grid_through_lm_eval(tmp_path):
    """SmolLM2 ties its embedding and head, and lm-eval re-ties them by name: scoring on the grid
    must leave one plain, tied parameter (a parametrized one broke ``tie_weights``), holding the
    grid's values inside and the float values again after."""
    from conftest import SHARED_DATA

    from distillab.evaluation.suite import evaluate_suite

    if not (SHARED_DATA / "arc_challenge").is_dir():
        pytest.skip("../shared/data not present")
    model, tokenizer = build_tiny("llama")
    model.config.tie_word_embeddings = True
    model.tie_weights()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    eval_cfg = {"batch_size": 4, "tasks": {"arc_challenge": {"limit": 3, "num_fewshot": 0}}}
    by_hand = build_tiny("llama")[0]
    by_hand.config.tie_word_embeddings = True
    by_hand.tie_weights()
    by_hand.load_state_dict(before)
    with torch.no_grad():
        for p in by_hand.parameters():
            if p.dim() == 2:
                p.copy_(fake_quantize(p, "q4_1"))
    with fake_quant.as_stored(model, QuantizeAware("q4_1")):
        on_grid = evaluate_suite(model, tokenizer, eval_cfg, tmp_path / "a", str(SHARED_DATA)).metrics
        assert model.lm_head.weight is model.model.embed_tokens.weight
    expected = evaluate_suite(by_hand, tokenizer, eval_cfg, tmp_path / "b", str(SHARED_DATA)).metrics
    assert on_grid == expected  # every metric, the choice log-likelihoods' too
    after = model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)  # the float weights are back
    assert model.lm_head.weight is model.model.embed_tokens.weight
