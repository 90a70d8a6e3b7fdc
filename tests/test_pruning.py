"""Importance scores and cuts on tiny Llama and Qwen2 models: each checked against a case with a known answer."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from distillab.errors import DistillabError
from distillab.models.surgery import decoder_layers
from distillab.models.tiny import build_tiny
from distillab.pruning.layer_scores import (
    ScoreInputs,
    activation_layer_scores,
    block_influence,
    calibration_perplexity,
    least_important,
    random_scores,
    removal_drop_scores,
    residual_stream,
)
from distillab.pruning.scores import SCORES, check_score, score_layers, valid_scores, weight_scores
from distillab.pruning.unstructured import achieved_sparsity, apply_masks, sparsity_masks, two_four_masks
from distillab.pruning.weight_scores import prunable_linears
from distillab.pruning.width import prune_heads, prune_neurons, structure_scores

ARCHS = ["llama", "qwen2"]


def _batches(n=2, seq=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 300, (2, seq), generator=g) for _ in range(n)]


def _silence_layer(model, i):
    """Zero the layer's residual writes (attention output and MLP down projection): an identity layer."""
    layer = decoder_layers(model)[i]
    with torch.no_grad():
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()


def test_residual_stream_is_raw_and_has_one_entry_per_layer_boundary():
    model, _ = build_tiny("llama")
    ids = _batches(1)[0]
    stream = residual_stream(model, ids)
    out = model(input_ids=ids, output_hidden_states=True)
    assert len(stream) == model.config.num_hidden_layers + 1
    torch.testing.assert_close(stream[0], out.hidden_states[0])
    torch.testing.assert_close(stream[2], out.hidden_states[2])
    torch.testing.assert_close(model.model.norm(stream[-1]), out.hidden_states[-1])  # HF's last is normed


@pytest.mark.parametrize("arch", ARCHS)
def test_every_activation_score_ranks_an_identity_layer_least_important(arch):
    model, _ = build_tiny(arch, num_hidden_layers=5)
    _silence_layer(model, 2)
    scores = activation_layer_scores(model, _batches(), lens_stride=1)
    assert set(scores) == {"block_influence", "angular", "lens_kl"}
    for name, values in scores.items():
        assert len(values) == 5
        assert values[2] == pytest.approx(0.0, abs=1e-5), name
        assert min(values[:2] + values[3:]) > 1e-4, name
        assert least_important(values, 1) == [2]
    blocks = activation_layer_scores(model, _batches(), scores=["angular"], angular_block=2)["angular"]
    assert len(blocks) == 4  # one per start of a 2-layer block


def test_block_influence_formula():
    h = torch.randn(2, 3, 8)
    assert block_influence(h, 2 * h).abs().max() < 1e-6  # scale does not change direction
    assert block_influence(h, -h).sub(2).abs().max() < 1e-6


def test_perplexity_drop_is_zero_for_an_identity_layer():
    model, _ = build_tiny("llama")
    _silence_layer(model, 1)
    batches = _batches()
    drops, base = removal_drop_scores(
        model, lambda m: calibration_perplexity(m, batches), higher_is_better=False
    )
    assert base > 1 and abs(drops[1]) < 1e-4 * base  # removing an identity layer changes nothing
    assert min(abs(d) for i, d in enumerate(drops) if i != 1) > 1e-3 * base  # removing others does


def test_a_contiguous_block_never_contains_a_protected_layer():
    # block starts 0..3 of a 5-layer model, n = 2: the best start (0) would remove protected layer 1
    scores = [0.1, 0.2, 0.3, 0.4]
    assert least_important(scores, 2, protect=[0, 1], contiguous_block=True) == [2, 3]
    assert least_important(scores, 2, protect=[1], contiguous_block=True) == [2, 3]
    with pytest.raises(DistillabError, match=r"prune.layers.protect: \[1, 3\] leaves no block of 2"):
        least_important([0.1, 0.2, 0.3], 2, protect=[1, 3], contiguous_block=True)


def test_least_important_protects_and_refuses_too_many():
    assert least_important([0.5, 0.1, 0.2, 0.9], 2, protect=[1]) == [0, 2]
    assert least_important([0.3, 0.1, 0.2], 2, contiguous_block=True) == [1, 2]
    with pytest.raises(DistillabError, match="prune.layers.num_remove: 3 layers requested, only 2"):
        least_important([1, 2, 3], 3, protect=[0])


@pytest.mark.parametrize("method", ["magnitude", "gradient", "taylor", "wanda"])
def test_weight_scores_match_their_definitions(method):
    model, _ = build_tiny("llama", num_hidden_layers=2)
    batch = _batches(1)
    scores = weight_scores(model, method, batch)
    name = "model.layers.1.mlp.up_proj"
    w = dict(model.named_modules())[name].weight.detach()
    assert set(scores) == set(prunable_linears(model)) and scores[name].shape == w.shape
    if method == "magnitude":
        torch.testing.assert_close(scores[name], w.abs())
        return
    if method == "wanda":
        captured = []
        handle = dict(model.named_modules())[name].register_forward_hook(
            lambda m, a, o: captured.append(a[0])
        )
        with torch.no_grad():
            model(input_ids=batch[0])
        handle.remove()
        norm = captured[0].reshape(-1, w.shape[1]).norm(dim=0)
        torch.testing.assert_close(scores[name], w.abs() * norm[None, :], rtol=1e-4, atol=1e-6)
        return
    logits = model(input_ids=batch[0]).logits[:, :-1]
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), batch[0][:, 1:].reshape(-1)
    )
    (grad,) = torch.autograd.grad(loss, dict(model.named_modules())[name].weight)
    want = grad.abs() if method == "gradient" else (w * grad).abs()
    torch.testing.assert_close(scores[name], want, rtol=1e-4, atol=1e-7)
    assert all(p.requires_grad for p in model.parameters())  # flags restored


def test_unstructured_masks_hit_the_target_sparsity():
    model, _ = build_tiny("qwen2", num_hidden_layers=2)
    scores = weight_scores(model, "magnitude")
    masks = sparsity_masks(scores, 0.5, "per_layer")
    apply_masks(model, masks)
    report = achieved_sparsity(model, list(masks))
    assert report["pruned_matrices"] == pytest.approx(0.5, abs=1e-3)
    assert 0 < report["all_parameters"] < report["pruned_matrices"]  # embeddings are not pruned
    global_masks = sparsity_masks(scores, 0.3, "global")
    kept = sum(int(m.sum()) for m in global_masks.values())
    total = sum(m.numel() for m in global_masks.values())
    assert 1 - kept / total == pytest.approx(0.3, abs=1e-3)
    for bad in (1.0, -0.1):
        with pytest.raises(DistillabError, match="prune.sparsity: must be in \\[0, 1\\)"):
            sparsity_masks(scores, bad)


def test_two_four_keeps_the_two_largest_of_every_four():
    scores = {"w": torch.tensor([[4.0, 1.0, 3.0, 2.0, 0.1, 0.4, 0.3, 0.2]])}
    assert two_four_masks(scores)["w"].tolist() == [[True, False, True, False, False, True, True, False]]
    model, _ = build_tiny("llama", num_hidden_layers=2)
    masks = two_four_masks(weight_scores(model, "magnitude"))
    apply_masks(model, masks)
    w = model.model.layers[0].mlp.up_proj.weight
    assert ((w.reshape(w.shape[0], -1, 4) != 0).sum(-1) <= 2).all()
    assert achieved_sparsity(model, list(masks))["pruned_matrices"] == pytest.approx(0.5, abs=1e-3)


@pytest.mark.parametrize("arch", ARCHS)
def test_width_pruning_drops_dead_heads_and_neurons_exactly_and_reloads(arch, tmp_path):
    model, _ = build_tiny(arch, num_hidden_layers=2)  # 4 query heads in 2 kv groups, head_dim 16
    head_dim = model.config.hidden_size // model.config.num_attention_heads
    with torch.no_grad():
        for layer in decoder_layers(model):  # query head 1 and neurons 0..31 write nothing
            layer.self_attn.o_proj.weight[:, head_dim : 2 * head_dim] = 0
            layer.mlp.down_proj.weight[:, :32] = 0
    ids = _batches(1)[0]
    with torch.no_grad():
        before = model(input_ids=ids).logits
    scores = structure_scores(weight_scores(model, "magnitude"), model)
    kept = prune_heads(model, scores, num_heads=2, num_kv_heads=1)  # the best kv group, both its query heads
    assert model.config.num_attention_heads == 2 and all(len(k) == 2 for k in kept["q_heads"])
    prune_neurons(model, scores, intermediate_size=96)
    assert model.model.layers[0].mlp.up_proj.weight.shape == (96, 64)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    with torch.no_grad():
        after, again = model(input_ids=ids).logits, reloaded(input_ids=ids).logits
    torch.testing.assert_close(again, after)
    assert reloaded.generate(ids[:1, :4], max_new_tokens=3, do_sample=False).shape == (1, 7)
    # only the silent neurons went, but heads of the dropped kv group did write: outputs differ
    assert not torch.allclose(before, after)


@pytest.mark.parametrize("arch", ARCHS)
def test_pruning_only_silent_structures_keeps_outputs(arch):
    model, _ = build_tiny(arch, num_hidden_layers=2)
    head_dim = model.config.hidden_size // model.config.num_attention_heads
    with torch.no_grad():
        for layer in decoder_layers(model):  # query heads 1 and 3 (one per kv group) write nothing
            layer.self_attn.o_proj.weight[:, head_dim : 2 * head_dim] = 0
            layer.self_attn.o_proj.weight[:, 3 * head_dim :] = 0
            layer.mlp.down_proj.weight[:, 100:] = 0
    ids = _batches(1)[0]
    with torch.no_grad():
        before = model(input_ids=ids).logits
    scores = structure_scores(weight_scores(model, "magnitude"), model)
    kept = prune_heads(model, scores, num_heads=2)  # keep both kv groups, one query head each
    prune_neurons(model, scores, intermediate_size=100)
    assert kept["q_heads"][0] == [0, 2] and kept["kv_heads"][0] == [0, 1]
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, before, rtol=1e-5, atol=1e-5)


def test_head_counts_that_break_groups_are_refused():
    model, _ = build_tiny("qwen2", num_hidden_layers=2)
    scores = structure_scores(weight_scores(model, "magnitude"), model)
    with pytest.raises(
        DistillabError, match="prune.width.num_attention_heads: 3 does not keep grouped-query groups"
    ):
        prune_heads(model, scores, num_heads=3)
    with pytest.raises(DistillabError, match="prune.width.num_attention_heads: 4 would put 4 query heads"):
        prune_heads(model, scores, num_heads=4, num_kv_heads=1)
    with pytest.raises(DistillabError, match="prune.width.intermediate_size: 0 outside"):
        prune_neurons(model, scores, intermediate_size=0)


def test_every_named_layer_score_finds_the_silenced_layer():
    """Each score in the table, called by name, finds the identity layer: least important by the
    activation scores, a drop of exactly 0 when removed (random: a seeded order)."""
    model, _ = build_tiny("llama", num_layers=4)
    _silence_layer(model, 2)
    batches = _batches()
    inputs = ScoreInputs(batches, seed=3, benchmark=lambda m: -calibration_perplexity(m, batches))
    for name in valid_scores("layers"):
        scores = score_layers(name, model, inputs)
        assert len(scores) == 4, name
        if name in ("ppl_drop", "benchmark_drop"):
            assert scores[2] == pytest.approx(0.0, abs=1e-9), name
        elif name == "last":  # depth, not activations: the last layers go first
            assert least_important(scores, 2) == [2, 3], name
        elif name != "random":
            assert least_important(scores, 1) == [2], name
    assert score_layers("random", model, inputs) == score_layers("random", model, ScoreInputs(seed=3))
    assert (
        score_layers("angular", model, inputs)
        == activation_layer_scores(model, batches, ["angular"])["angular"]
    )
    with pytest.raises(
        DistillabError, match="prune.score: 'cosine' is not a score for prune=layers; valid: block_influence"
    ):
        score_layers("cosine", model, inputs)


def test_one_score_table_says_where_each_score_is_valid():
    """Layer scores cut layers (the activation scores also cut students before distillation), weight
    scores cut widths and weights; every check reads the same table, so each error lists exactly
    the names its key accepts."""
    assert valid_scores("student") == ["block_influence", "angular", "lens_kl", "last"]
    assert set(valid_scores("layers")) == {n for n, s in SCORES.items() if s.kind == "layer"}
    assert (
        valid_scores("width") == valid_scores("unstructured") == ["magnitude", "gradient", "taylor", "wanda"]
    )
    assert check_score("wanda", "unstructured") is SCORES["wanda"]
    with pytest.raises(
        DistillabError, match=r"prune.score: 'wanda' is not a score for prune=layers \(a weight score, "
    ):
        check_score("wanda", "layers")
    with pytest.raises(DistillabError, match=r"student.score: 'random' is not a score for a student cut"):
        check_score("random", "student")


def test_layer_removal_scores_with_its_settings(tmp_path):
    """distillab-prune's score function passes each score its settings: a contiguous angular block of
    per_step layers, the lens stride, and a random order seeded per (seed, removal step)."""
    from distillab.pruning.methods import LayerRemoval, PruneJob

    model, tok = build_tiny("llama", num_layers=4)
    batches = _batches()
    job = PruneJob(model, tok, batches, tmp_path, seed=2)
    layers = {"num_remove": 2, "schedule": "one_shot", "per_step": 1, "lens_stride": 4}  # no removal block

    def scores(score, contiguous=False, step=0):
        method = LayerRemoval(score, dict(layers))
        return method.score_fn(job, method.per_step if contiguous else 1)(model, step)

    angular = activation_layer_scores(model, batches, ["angular"], angular_block=2)["angular"]
    assert len(angular) == 3 and scores("angular", contiguous=True) == angular
    assert scores("lens_kl") == activation_layer_scores(model, batches, ["lens_kl"], lens_stride=4)["lens_kl"]
    assert scores("random", step=5) == random_scores(4, 2005) != scores("random", step=6)


@pytest.mark.parametrize(
    "task,metric,sign", [("arc_easy", "acc_norm", 1), ("arc_easy_margin", "choice_nll", -1)]
)
def test_benchmark_drop_reads_the_metrics_direction_from_the_task_registry(
    tmp_path, monkeypatch, task, metric, sign
):
    """A layer whose removal raises a lower-is-better metric (choice_nll) hurts: the benchmark handed
    to the drop score is higher-is-better whatever the metric (the sign came from nowhere before)."""
    from distillab.pruning import methods

    monkeypatch.setattr(methods, "run_tasks", lambda *args, **kwargs: {f"{task}/{metric}": 0.75})
    seen = {}
    monkeypatch.setattr(methods, "score_layers", lambda name, model, inputs: seen.setdefault("x", inputs))
    model, tok = build_tiny("llama", num_layers=4)
    removal = {"task": task, "metric": metric, "limit": 5}
    layers = {"num_remove": 1, "schedule": "one_shot", "per_step": 1, "lens_stride": 4, "removal": removal}
    method = methods.LayerRemoval("benchmark_drop", layers)
    method.check(model.config)
    method.score_fn(methods.PruneJob(model, tok, _batches(), tmp_path))(model, 0)
    assert seen["x"].benchmark(model) == sign * 0.75
