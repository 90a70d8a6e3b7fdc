"""Teacher-generated corpora: written once, reused, recorded with their settings, usable as data."""

from __future__ import annotations

import json

import pytest

from distillab.data.corpus import read_documents
from distillab.data.teacher_generated import GenerationSettings, generate_corpus
from distillab.errors import DistillabError
from distillab.evaluation.suite import model_fingerprint
from distillab.models.tiny import build_tiny


def test_generated_corpus_is_cached_and_reads_as_a_corpus(tmp_path):
    model, tok = build_tiny("llama")
    prompts = ["Question: 1 + 1?\nAnswer:", "Question: the sun?\nAnswer:", "Once upon a time"]
    settings = GenerationSettings(max_new_tokens=4, batch_size=2)
    path, reused = generate_corpus(model, tok, prompts, tmp_path, settings, model_fingerprint(model))
    assert not reused and tok.padding_side == "right"  # restored after left-padded generation
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == prompts
    assert all(r["text"] == r["prompt"] + r["response"] and r["response"] for r in rows)
    recorded = json.loads(path.with_suffix(".settings.json").read_text())
    assert recorded["max_new_tokens"] == 4 and recorded["num_prompts"] == 3
    again, reused = generate_corpus(model, tok, prompts, tmp_path, settings, model_fingerprint(model))
    assert reused and again == path
    other, _ = generate_corpus(
        model, tok, prompts, tmp_path, GenerationSettings(max_new_tokens=3), model_fingerprint(model)
    )
    assert other != path
    assert read_documents({"format": "jsonl", "files": str(path)}, tmp_path)[0].startswith("Question: 1 + 1?")


def test_greedy_batched_generation_matches_one_at_a_time(tmp_path):
    model, tok = build_tiny("qwen2")
    prompts = ["short", "a much longer prompt with several more tokens"]
    from distillab.data.teacher_generated import generate_responses

    batched = generate_responses(model, tok, prompts, GenerationSettings(max_new_tokens=5, batch_size=2))
    single = [
        generate_responses(model, tok, [p], GenerationSettings(max_new_tokens=5, batch_size=1))[0]
        for p in prompts
    ]
    assert batched == single


def test_bad_generation_settings():
    with pytest.raises(DistillabError, match="generate.max_new_tokens: must be >= 1"):
        GenerationSettings(max_new_tokens=0).validate()
    with pytest.raises(DistillabError, match="generate.temperature: must be > 0 when sampling"):
        GenerationSettings(do_sample=True, temperature=0).validate()
