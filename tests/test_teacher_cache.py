"""Offline top-k teacher cache: exact parity with the online teacher at k = V, reuse, training from it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import compose_config, tiny_overrides

from distillab.data.teacher_cache import TopKCacheDataset, build_topk_cache, collate_cached, topk_with_tail
from distillab.distill import run
from distillab.errors import DistillabError
from distillab.models.tiny import build_tiny
from distillab.objectives.divergences import forward_kl, forward_kl_topk
from distillab.objectives.objective import build_objective
from distillab.objectives.signals import TermInputs, TopK
from distillab.objectives.terms import soft_label_kd


def test_topk_plus_tail_is_a_proper_distribution():
    logits = torch.randn(2, 3, 50, dtype=torch.float64)
    values, ids, tail = topk_with_tail(logits, 5, temperature=2.0)
    total = values.exp().sum(-1) + tail.exp()
    torch.testing.assert_close(total.float(), torch.ones(2, 3))
    assert ids.dtype == torch.int32 and values.shape == (2, 3, 5)


def test_full_vocabulary_cache_equals_the_online_forward_kl():
    g = torch.Generator().manual_seed(0)
    t, s = (
        torch.randn(2, 4, 30, generator=g, dtype=torch.float64),
        torch.randn(2, 4, 30, generator=g, dtype=torch.float64),
    )
    values, ids, tail = topk_with_tail(t, 30, temperature=2.0)
    cached = forward_kl_topk(values.double(), ids.long(), tail.double(), s, temperature=2.0)
    online = forward_kl(F.log_softmax(t / 2, -1), F.log_softmax(s / 2, -1))
    torch.testing.assert_close(cached, online, rtol=1e-6, atol=1e-6)
    small = forward_kl_topk(
        *[x.double() if x.is_floating_point() else x.long() for x in topk_with_tail(t, 5, 2.0)], s, 2.0
    )
    assert torch.all(small <= online + 1e-9)  # coarsening can only lower a KL (data processing inequality)


def test_cache_is_built_once_and_matches_the_online_teacher_on_a_tiny_model(tmp_path):
    teacher, _ = build_tiny("llama")
    student, _ = build_tiny("llama", seed=1)
    blocks = torch.randint(0, 300, (5, 16), generator=torch.Generator().manual_seed(0))
    vocab = teacher.config.vocab_size
    directory = build_topk_cache(
        teacher, blocks, tmp_path, "key", k=vocab, temperature=2.0, batch_size=2, shard_blocks=2
    )
    assert len(list(directory.glob("shard-*.safetensors"))) == 3 and (directory / "manifest.json").is_file()
    mtime = (directory / "manifest.json").stat().st_mtime
    assert build_topk_cache(teacher, blocks, tmp_path, "key", k=vocab, temperature=2.0) == directory
    assert (directory / "manifest.json").stat().st_mtime == mtime  # reused, not rebuilt

    batch = collate_cached([TopKCacheDataset(directory)[i] for i in range(2)])
    assert torch.equal(batch["input_ids"], blocks[:2])
    with torch.no_grad():
        s_logits, t_logits = (
            student(input_ids=batch["input_ids"]).logits,
            teacher(input_ids=batch["input_ids"]).logits,
        )
    mask = torch.ones(2, 16, dtype=torch.bool)
    cached_inputs = TermInputs(
        student_logits=s_logits,
        targets=batch["labels"],
        mask=mask,
        teacher_topk=TopK(batch["teacher_topk_logp"], batch["teacher_topk_ids"], batch["teacher_tail_logp"]),
    )
    cached = build_objective(
        {"kd_cached": {"_target_": "distillab.objectives.terms.CachedTopKKD", "temperature": 2.0}}
    )(cached_inputs)[1]["kd_cached"]
    online = soft_label_kd(t_logits, s_logits, mask, 2.0)
    torch.testing.assert_close(cached, online, rtol=1e-4, atol=1e-5)


def test_training_from_the_cache_runs_without_a_teacher(tmp_path, tiny_corpus):
    cfg = compose_config(
        tiny_overrides(
            tmp_path,
            tiny_corpus,
            "objective=kd_cached",
            "teacher_cache.enabled=true",
            "teacher_cache.k=8",
            "logger=csv",
            "export=false",
        )
    )
    results = run(cfg)
    assert "train/loss_kd_cached" in results["train_metrics"]
    assert (Path(results["teacher_cache"]) / "manifest.json").is_file()


def test_kd_cached_without_the_cache_is_a_config_error(tmp_path, tiny_corpus):
    cfg = compose_config(tiny_overrides(tmp_path, tiny_corpus, "objective=kd_cached", "logger=csv"))
    with pytest.raises(DistillabError, match="teacher_cache.enabled: objective term kd_cached needs it"):
        run(cfg)
