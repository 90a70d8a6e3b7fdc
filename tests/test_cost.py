"""The cost ledger: FLOPs counted from the shapes and the parameters that train, wall seconds by
phase and the device, in every results.json and W&B summary."""

from __future__ import annotations

import json

import pytest
from conftest import compose_config, tiny_overrides

from distillab import cost
from distillab.models.surgery import attention_head_dim, decoder_layers
from distillab.models.tiny import build_tiny
from distillab.tracking.wandb_run import summary_metrics
from distillab.training.tuning import LastLayers, LoRA


def _linear_weights(module) -> int:
    names = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    return sum(getattr(module, n).weight.numel() for n in names if hasattr(module, n))


def test_forward_flops_are_twice_the_matrix_weights_plus_causal_attention():
    model, _ = build_tiny("llama")
    c, seq = model.config, 64
    layer = decoder_layers(model)[0]
    by_hand = 2 * (_linear_weights(layer.self_attn) + _linear_weights(layer.mlp))
    by_hand += 2 * 2 * c.num_attention_heads * attention_head_dim(c) * seq / 2
    counted = cost.forward_flops_per_token(model, seq)
    assert counted["layers"] == [by_hand] * c.num_hidden_layers
    assert counted["head"] == 2 * c.vocab_size * c.hidden_size  # tied: the embedding, used as a matmul


def test_backward_follows_what_trains():
    model, _ = build_tiny("llama")
    full = cost.training_flops_per_token(model, None, 64)
    forward = full["student_forward"]
    matrices = sum(
        2 * _linear_weights(x) for layer in decoder_layers(model) for x in (layer.self_attn, layer.mlp)
    )
    head = 2 * model.config.vocab_size * model.config.hidden_size
    assert full["student_backward"] == pytest.approx(forward + matrices + head)  # ≈ 2 x forward
    assert full["teacher_forward"] == 0
    teacher, _ = build_tiny("llama")
    with LoRA(rank=2).applied(model):  # activations all the way down, weight gradients of adapters only
        lora = cost.training_flops_per_token(model, teacher, 64)
    assert forward < lora["student_backward"] < full["student_backward"]
    assert lora["teacher_forward"] == pytest.approx(forward)
    with LastLayers(num_layers=1, head=False).applied(model):
        last = cost.training_flops_per_token(model, None, 64)
    one_layer = cost.forward_flops_per_token(model, 64)["layers"][-1]
    assert last["student_backward"] == pytest.approx(
        one_layer + head + matrices / model.config.num_hidden_layers
    )


def test_every_distill_run_writes_its_ledger(tiny_corpus, tmp_path):
    from distillab.distill import run

    evaluation = [
        "+eval.perplexity.tiny.source.files=corpus/tiny.jsonl",
        "+eval.perplexity.tiny.block_size=16",
    ]
    results = run(compose_config(tiny_overrides(tmp_path, tiny_corpus, *evaluation, "logger=csv")))
    saved = json.loads((tmp_path / "results.json").read_text())["cost"]
    assert saved == results["cost"]
    assert saved["train_tokens"] == 2 * 2 * 32  # steps x batch x block
    per_token = cost.training_flops_per_token(*_run_models(results), 32)
    assert saved["flops"]["total"] == pytest.approx(sum(per_token.values()) * saved["train_tokens"], rel=1e-6)
    wall = saved["wall_seconds"]
    assert wall["train"] > 0 and wall["evaluate"] > 0 and wall["other"] > 0
    assert wall["train"] + wall["evaluate"] + wall["other"] == pytest.approx(wall["total"])
    assert "logical CPUs" in saved["device"]
    assert summary_metrics(results)["cost/flops_total"] == saved["flops"]["total"]


def test_a_resumed_runs_total_counts_its_earlier_training():
    """Resumed, the Timer's training seconds span every process, the wall time only this one: the
    total must not fall below training + evaluation (it did: 331 s total for 1,898 s of training)."""
    resumed = cost.ledger({"wall_seconds": 330.8, "train_seconds": 1897.9}, 291.0, "cpu")["wall_seconds"]
    assert resumed == {"train": 1897.9, "evaluate": 291.0, "other": 0.0, "total": pytest.approx(2188.9)}
    fresh = cost.ledger({"wall_seconds": 100.0, "train_seconds": 60.0}, 30.0, "cpu")["wall_seconds"]
    assert fresh["total"] == 100.0 and fresh["other"] == pytest.approx(10.0)


def _run_models(results):
    """The run's student (2 of the tiny teacher's 4 layers) and its teacher, rebuilt for the count."""
    from transformers import AutoModelForCausalLM

    teacher, _ = build_tiny("llama")
    return AutoModelForCausalLM.from_pretrained(results["student_dir"]), teacher


def test_a_pipeline_row_costs_every_stage_up_to_it():
    from distillab.pipeline import with_cumulative_cost

    def ledger(flops, train):
        return {
            "train_tokens": 10,
            "flops": {"total": flops},
            "wall_seconds": {"train": train, "other": 1.0},
            "device": "cpu",
        }

    rows = with_cumulative_cost(
        [{"cost": ledger(5.0, 2.0)}, {"cost": ledger(0.0, 0.0)}, {"cost": ledger(7.0, 3.0)}]
    )
    assert [r["cost"]["flops"]["total"] for r in rows] == [5.0, 5.0, 12.0]
    assert [r["cost"]["wall_seconds"]["other"] for r in rows] == [1.0, 2.0, 3.0]
    assert rows[2]["cost"]["train_tokens"] == 30
    assert with_cumulative_cost([{"cost": None}, {"cost": ledger(1.0, 1.0)}])[1]["cost"] is None  # unknown
