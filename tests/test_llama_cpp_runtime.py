"""Scoring the GGUF file in llama.cpp itself, next to its torch score on the same items."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from conftest import compose_config
from test_quantize import TEXT, quantize_overrides

from distillab.errors import DistillabError
from distillab.evaluation.runtimes import markdown, runtime_differences
from distillab.models.tiny import build_tiny
from distillab.quantization import llama_cpp
from distillab.quantization.gguf_export import export_gguf
from distillab.quantize import run


def test_runtime_differences_pair_the_same_items_only():
    torch_items = {"arc": {"id": ["a", "b", "c", "d"], "acc": [1.0, 0.0, 1.0, 0.0]}}
    llama_items = {"arc": {"id": ["a", "b", "c", "d"], "acc": [1.0, 1.0, 1.0, 0.0]}}
    diffs = runtime_differences({"arc/acc": 0.5}, torch_items, {"arc/acc": 0.75}, llama_items, {"arc": "acc"})
    entry = diffs["arc/acc"]
    assert entry["difference"] == pytest.approx(0.25) and entry["n_items"] == 4
    assert entry["low"] <= 0.25 <= entry["high"]
    other = {"arc": {"id": ["x", "b", "c", "d"], "acc": [1.0, 1.0, 1.0, 0.0]}}
    unpaired = runtime_differences({"arc/acc": 0.5}, torch_items, {"arc/acc": 0.75}, other, {"arc": "acc"})
    assert "difference" not in unpaired["arc/acc"]  # different items: no paired interval
    assert "no paired interval" in markdown(unpaired, "llama.cpp") and "+0.2500" in markdown(diffs, "x")


def test_without_the_runtime_auto_says_so_once_and_true_is_refused(
    tmp_path, tiny_corpus, monkeypatch, caplog
):
    monkeypatch.setattr(llama_cpp, "is_available", lambda: False)

    def missing(key="quantize.gguf_type"):
        raise DistillabError(f"{key}: needs llama.cpp; {llama_cpp.INSTALL_HINT}")

    monkeypatch.setattr(llama_cpp, "require_llama_cpp", missing)
    with caplog.at_level(logging.WARNING):
        results = run(compose_config(quantize_overrides(tmp_path / "auto", tiny_corpus), "quantize"))
    assert "student_llama_cpp" not in results and "llama_cpp" not in results
    lines = [r.getMessage() for r in caplog.records if "score_in_llama_cpp" in r.getMessage()]
    assert len(lines) == 1 and "the torch score stands alone" in lines[0]
    asked = quantize_overrides(tmp_path / "true", tiny_corpus, "quantize.score_in_llama_cpp=true")
    with pytest.raises(DistillabError, match="^quantize.score_in_llama_cpp: needs llama.cpp"):
        run(compose_config(asked, "quantize"))
    assert not (tmp_path / "true" / "results.json").exists()


def test_llama_cpp_scores_what_lm_eval_scores_in_torch_on_an_f32_file(tmp_path):
    """An f32 GGUF holds the model's weights exactly: llama.cpp's loglikelihoods and greedy text
    must be lm-eval's HF scores up to float32 kernel differences, and the same for perplexity."""
    pytest.importorskip("llama_cpp", reason="needs the gguf-runtime extra")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from distillab.evaluation.llama_cpp_runtime import LlamaCppScorer, block_nll_in, llama_cpp_lm_class

    model, tok = build_tiny("llama")
    path = export_gguf(model, tok, tmp_path / "m.gguf", "f32", pre_tokenizer="gpt-2")
    pairs = [("def add(a, b):", " return a + b"), (TEXT[:20], TEXT[20:40]), (TEXT[:8], TEXT[8:12])]
    requests = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    theirs = HFLM(pretrained=model.eval(), tokenizer=tok, batch_size=2).loglikelihood(
        requests, disable_tqdm=True
    )
    scorer = LlamaCppScorer(path, 64, 1)
    try:
        ours = llama_cpp_lm_class()(scorer, tok.bos_token_id, 64).loglikelihood(requests, disable_tqdm=True)
        for (a, greedy_a), (b, greedy_b) in zip(ours, theirs, strict=True):
            assert a == pytest.approx(b, abs=2e-3) and greedy_a == greedy_b
        block = tok(TEXT).input_ids[:24]
        with torch.no_grad():
            logits = model(torch.tensor([block])).logits[0, :-1]
        expected = torch.nn.functional.cross_entropy(logits, torch.tensor(block[1:]), reduction="sum")
        assert block_nll_in(scorer, block) == pytest.approx(float(expected), abs=5e-3)
    finally:
        scorer.close()


def test_the_quantize_app_scores_the_file_in_llama_cpp_next_to_torch(tmp_path, tiny_corpus, monkeypatch):
    pytest.importorskip("llama_cpp", reason="needs the gguf-runtime extra")
    import time

    from distillab import quantize

    seconds, real = [], quantize.evaluate_gguf

    def timed(*args, **kwargs):  # made a second slower: the ledger must file it under evaluate
        start = time.time()
        time.sleep(1.0)
        out = real(*args, **kwargs)
        seconds.append(time.time() - start)
        return out

    monkeypatch.setattr(quantize, "evaluate_gguf", timed)
    overrides = quantize_overrides(
        tmp_path, tiny_corpus, "quantize.pre_tokenizer=gpt-2", "quantize.score_in_llama_cpp=true"
    )
    results = run(compose_config(overrides, "quantize"))
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["cost"]["wall_seconds"]["evaluate"] >= seconds[0]  # llama.cpp's scoring is evaluation
    assert saved["runtimes"]["student_llama_cpp"].startswith("llama.cpp")
    entry = saved["llama_cpp"]["vs_torch"]["tiny/ppl"]
    assert entry["torch"] == results["student"]["tiny/ppl"]
    assert entry["llama_cpp"] == saved["student_llama_cpp"]["tiny/ppl"] and entry["n_items"] > 0
    assert abs(entry["llama_cpp"] / entry["torch"] - 1) < 0.05  # the same q8_0 weights, two runtimes
    assert "Scored in llama.cpp" in (tmp_path / "retention.md").read_text()
    assert (tmp_path / "items" / "student_llama_cpp").is_dir()
