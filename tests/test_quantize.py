"""Quantization, the last stage: GGUF export round trips, torchao weight-only, ``distillab-quantize``."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import compose_config
from transformers import AutoModelForCausalLM, AutoTokenizer

from distillab.errors import DistillabError
from distillab.models.tiny import build_tiny
from distillab.pruning.width import prune_heads
from distillab.quantization import llama_cpp
from distillab.quantization.gguf_export import export_gguf, interleave_rotary_rows
from distillab.quantization.weight_only import quantize_weights, state_dict_bytes
from distillab.quantize import run

TEXT = "def add(a, b):\n    return a + b  # the student learned from the teacher"


def reload(path):
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    return model.eval(), AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def halve_heads(model):
    """Keep half the query and key/value heads (random scores): head_dim * heads != hidden_size."""
    c = model.config
    scores = {
        "q_heads": [torch.rand(c.num_attention_heads) for _ in range(c.num_hidden_layers)],
        "kv_heads": [torch.rand(c.num_key_value_heads) for _ in range(c.num_hidden_layers)],
    }
    prune_heads(model, scores, c.num_attention_heads // 2, c.num_key_value_heads // 2)


def llama_cpp_run(path, ids: list[int]):
    """``(llama.cpp's tokens for TEXT, its logits for ids)`` of a GGUF file."""
    llm = llama_cpp.require_llama_cpp().Llama(
        model_path=str(path), n_ctx=64, n_threads=1, logits_all=True, verbose=False, seed=0
    )
    try:
        tokens = llm.tokenize(TEXT.encode(), add_bos=False, special=False)
        llm.eval(ids)
        return tokens, llm.scores[: len(ids)].copy()
    finally:
        llm.close()


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_gguf_f32_export_reloads_to_the_same_model_and_tokenizer(tmp_path, arch):
    model, tokenizer = build_tiny(arch)
    path = export_gguf(model, tokenizer, tmp_path / "m.gguf", "f32")
    again, again_tok = reload(path)
    ids = tokenizer(TEXT, return_tensors="pt").input_ids
    assert again_tok(TEXT).input_ids == ids[0].tolist()
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, model(ids).logits, rtol=0, atol=1e-5)
    assert not list(tmp_path.glob("*.tmp*"))  # written atomically


def test_a_cut_models_teacher_layers_survive_the_gguf_round_trip(tmp_path):
    """A stage after quantization (the ordering study's heal) still maps layers to the teacher's."""
    from distillab.models.loading import load_model
    from distillab.models.spec import ModelSpec
    from distillab.models.surgery import remove_layers, teacher_layer_indices

    model, tokenizer = build_tiny("llama", num_hidden_layers=4)
    cut = remove_layers(model, [1])
    export_gguf(cut, tokenizer, tmp_path / "m.gguf", "q8_0")
    again, _ = load_model(ModelSpec(name_or_path=str(tmp_path), gguf_file="m.gguf"))
    assert teacher_layer_indices(again) == [0, 2, 3]


def test_llama_with_biases_is_refused_not_silently_broken(tmp_path):
    """transformers' GGUF loader drops Llama biases: the export says so instead of writing a file whose
    measured quality would be wrong."""
    model, tokenizer = build_tiny("llama", attention_bias=True)
    with pytest.raises(DistillabError, match="attention_bias/mlp_bias is not supported"):
        export_gguf(model, tokenizer, tmp_path / "m.gguf", "f32")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("file_type,bits_per_weight", [("q8_0", 8.5), ("q4_0", 4.5)])
def test_gguf_block_quantization_shrinks_the_file_and_stays_close(tmp_path, file_type, bits_per_weight):
    model, tokenizer = build_tiny("llama")
    full = export_gguf(model, tokenizer, tmp_path / "f32.gguf", "f32")
    small = export_gguf(model, tokenizer, tmp_path / f"{file_type}.gguf", file_type)
    matrices = sum(p.numel() for n, p in model.named_parameters() if p.ndim == 2 and "lm_head" not in n)
    # the quantized matrices dominate the shrink: (32 - bits) of every 32 bits
    saved = full.stat().st_size - small.stat().st_size
    assert saved == pytest.approx(matrices * (32 - bits_per_weight) / 8, rel=0.02)
    again, _ = reload(small)
    ids = tokenizer(TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        error = (again(ids).logits - model(ids).logits).abs().max().item()
    assert 0 < error < (0.05 if file_type == "q8_0" else 0.5)


def test_width_pruned_model_exports_with_its_own_head_dim(tmp_path):
    model, tokenizer = build_tiny("llama")
    halve_heads(model)
    narrow = model
    assert narrow.config.head_dim * narrow.config.num_attention_heads != narrow.config.hidden_size
    path = export_gguf(narrow, tokenizer, tmp_path / "narrow.gguf", "f32", pre_tokenizer="gpt-2")
    again, _ = reload(path)
    ids = tokenizer(TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, narrow(ids).logits, rtol=0, atol=1e-5)
    if llama_cpp.is_available():  # llama.cpp reads the head_dim from key_length too
        _, ours = llama_cpp_run(path, ids[0].tolist())
        np.testing.assert_allclose(ours, narrow(ids).logits[0].detach().numpy(), atol=1e-3, rtol=0)


def test_a_head_pruned_qwen2_is_refused_for_gguf(tmp_path):
    """Qwen2's GGUF loaders (llama.cpp and transformers) assume head_dim = hidden / heads."""
    model, tokenizer = build_tiny("qwen2")
    halve_heads(model)
    with pytest.raises(DistillabError, match="Qwen2 with fewer attention heads"):
        export_gguf(model, tokenizer, tmp_path / "m.gguf", "f32")
    assert not list(tmp_path.iterdir())


def test_rotary_interleave_matches_the_inverse_transformers_applies():
    weight = np.arange(4 * 8 * 3, dtype=np.float32).reshape(4 * 8, 3)  # 4 heads of dim 8
    interleaved = interleave_rotary_rows(weight, 4)
    # transformers' GGUF loader: reshape(n_head, dim // 2, 2, ...) then swap back
    restored = interleaved.reshape(4, 4, 2, 3).swapaxes(2, 1).reshape(weight.shape)
    np.testing.assert_array_equal(restored, weight)
    assert not np.array_equal(interleaved, weight)


def test_unsupported_architecture_and_type_are_one_line_errors(tmp_path):
    model, tokenizer = build_tiny("llama")
    with pytest.raises(DistillabError, match="gguf_type.*q4_0"):
        export_gguf(model, tokenizer, tmp_path / "m.gguf", "q3_bogus")
    model.config.model_type = "gpt_neox"
    with pytest.raises(DistillabError, match="supports model types llama, qwen2"):
        export_gguf(model, tokenizer, tmp_path / "m.gguf", "f16")


@pytest.mark.parametrize("bits,tolerance", [(8, 0.05), (4, 0.5)])
def test_torchao_weight_only_quantization(bits, tolerance):
    model, tokenizer = build_tiny("llama")
    ids = tokenizer(TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        reference = model(ids).logits
    full_bytes = state_dict_bytes(model)
    quantize_weights(model, bits, group_size=32)
    assert type(model.model.layers[0].mlp.up_proj.weight).__name__ != "Parameter"
    assert model.lm_head.weight.dtype == torch.float32  # tied head/embedding stay full precision
    with torch.no_grad():
        error = (model(ids).logits - reference).abs().max().item()
    assert 0 < error < tolerance
    assert state_dict_bytes(model) < full_bytes


def quantize_overrides(run_dir, data_dir, *extra):
    return [
        "model=tiny_llama",
        f"paths.run_dir={run_dir}",
        f"paths.data_dir={data_dir}",
        *([] if "quantize=torchao" in extra else ["quantize.pre_tokenizer=default"]),  # a GGUF key
        "eval=none",
        "+eval.perplexity.tiny.source.files=corpus/tiny.jsonl",
        "+eval.perplexity.tiny.block_size=32",
        "+eval.perplexity.tiny.max_tokens=256",
        "speed.new_tokens=4",
        "logger=csv",
        "threads=1",
        *extra,
    ]


@pytest.mark.parametrize(
    "extra,artifact",
    [([], "model-q8_0.gguf"), (["quantize=torchao", "quantize.bits=4"], "model-int4.pt")],
)
def test_quantize_app_reports_size_speed_and_retention(tmp_path, tiny_corpus, extra, artifact):
    results = run(compose_config(quantize_overrides(tmp_path, tiny_corpus, *extra), "quantize"))
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["artifact"].endswith(artifact) and (tmp_path / artifact).is_file()
    assert saved["bytes"]["student"] == (tmp_path / artifact).stat().st_size
    assert saved["bytes"]["student"] < saved["bytes"]["input"]
    assert saved["tokens_per_s"] > 0
    ppl = results["student"]["tiny/ppl"]
    assert ppl != results["teacher"]["tiny/ppl"]  # quantization changed the model ...
    assert 0.5 < results["retention"]["tiny/ppl"] <= 1.05  # ... but not by much


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_gguf_export_runs_in_llama_cpp_with_the_same_tokens_and_logits(tmp_path, arch):
    """The exported file is what Ollama-style runtimes load: llama.cpp must tokenize like the input
    tokenizer and compute the same next-token logits (catches a wrong rotary row order or a
    misnamed hyperparameter, which transformers' own GGUF loader would undo or ignore)."""
    pytest.importorskip("llama_cpp", reason="needs the gguf-runtime extra")
    model, tokenizer = build_tiny(arch)
    path = export_gguf(model, tokenizer, tmp_path / "m.gguf", "f32", pre_tokenizer="gpt-2")
    ids = tokenizer(TEXT).input_ids
    tokens, ours = llama_cpp_run(path, ids)
    assert tokens == ids
    with torch.no_grad():
        theirs = model(torch.tensor([ids])).logits[0].numpy()
    # measured: 1.4e-4 exported right, 6e-3 with the rotary rows left in HF order (logit std 0.16)
    np.testing.assert_allclose(ours, theirs, atol=1e-3, rtol=0)


def test_llama_cpp_types_need_the_extra_or_run(tmp_path, tiny_corpus):
    overrides = quantize_overrides(tmp_path, tiny_corpus, "quantize.gguf_type=q4_k_m")
    if not llama_cpp.is_available():
        with pytest.raises(DistillabError, match="gguf-runtime"):
            run(compose_config(overrides, "quantize"))
        assert not (tmp_path / "results.json").exists()
        return
    results = run(compose_config(overrides, "quantize"))
    assert results["runtime"] == "llama.cpp" and (tmp_path / "model-q4_k_m.gguf").is_file()


def test_a_bad_quantize_setting_on_the_cli_exits_with_one_line(tmp_path, tiny_corpus):
    """The real CLI once (a new interpreter costs ~10 s on 2 cores); the in-process catalogue holds
    the other bad settings (gguf_type, bits, ...)."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "distillab.quantize",
            *quantize_overrides(tmp_path, tiny_corpus, "quantize=bitsandbytes"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2, " ".join(proc.args[3:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "quantize: unknown 'bitsandbytes'; valid: gguf, torchao" in lines[0], (
        proc.stderr
    )
    assert not (tmp_path / "results.json").exists()
