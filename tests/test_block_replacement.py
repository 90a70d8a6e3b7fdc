"""Replacing a removed block: ReplaceMe's least-squares map folded into the layer before (known
answers: a block that is exactly linear in that layer's MLP output is recovered exactly), and the
Streamline layer trained to stand in for a block; both through distillab-prune."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import compose_config
from test_prune_run import prune_overrides
from torch import nn

from distillab.models.surgery import decoder_layers, remove_layers
from distillab.models.tiny import build_tiny
from distillab.prune import run
from distillab.pruning.block_replacement import (
    fold_into_down_proj,
    linear_replacement,
    replace_me,
    streamline,
)


def _batches(n=3, seq=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 300, (2, seq), generator=g) for _ in range(n)]


def test_least_squares_recovers_an_exact_linear_map():
    g = torch.Generator().manual_seed(0)
    mlp_out, truth = torch.randn(200, 16, generator=g), torch.randn(16, 16, generator=g)
    torch.testing.assert_close(linear_replacement(mlp_out, mlp_out @ truth), truth, rtol=1e-4, atol=1e-4)


def test_folding_makes_down_proj_output_times_the_map_with_the_same_shape():
    layer = nn.Linear(32, 8, bias=True)
    x, transform = torch.randn(5, 32), torch.randn(8, 8)
    expected = layer(x) @ transform
    fold_into_down_proj(layer, transform)
    assert layer.weight.shape == (8, 32)  # W <- T^T W: no new parameters
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


class _LinearInPrecedingMlp(nn.Module):
    """A decoder layer whose whole effect is ``h + M·A``, with ``M`` the previous layer's MLP output:
    exactly the family ReplaceMe's fold can represent (``Y + M·(I + A)``)."""

    def __init__(self, previous_mlp: nn.Module, transform: torch.Tensor):
        super().__init__()
        self.transform = transform
        self.latest: list[torch.Tensor] = []
        previous_mlp.register_forward_hook(lambda _m, _a, out: self.latest.append(out))

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states + self.latest.pop() @ self.transform


def test_a_block_linear_in_the_preceding_mlp_output_is_recovered_exactly():
    model, _ = build_tiny("llama", num_hidden_layers=4)
    d = model.config.hidden_size
    transform = 0.1 * torch.randn(d, d, generator=torch.Generator().manual_seed(1))
    decoder_layers(model)[2] = _LinearInPrecedingMlp(decoder_layers(model)[1].mlp, transform)
    ids = _batches(1)[0]
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    student = replace_me(model, _batches(), [2])
    assert student.num_parameters() == remove_layers(model, [2]).num_parameters()
    with torch.no_grad():
        torch.testing.assert_close(student(input_ids=ids).logits, expected, rtol=1e-4, atol=1e-4)


def test_an_identity_block_is_replaced_by_the_identity():
    model, _ = build_tiny("llama", num_hidden_layers=4)
    with torch.no_grad():
        for i in (1, 2):  # layers 1-2 write nothing to the residual stream
            decoder_layers(model)[i].self_attn.o_proj.weight.zero_()
            decoder_layers(model)[i].mlp.down_proj.weight.zero_()
        before = decoder_layers(model)[0].mlp.down_proj.weight.clone()
    student = replace_me(model, _batches(), [1, 2])
    torch.testing.assert_close(decoder_layers(student)[0].mlp.down_proj.weight, before, rtol=1e-4, atol=1e-5)


def test_streamline_trains_only_the_replacement_toward_the_blocks_output(caplog):
    model, _ = build_tiny("llama", num_hidden_layers=4)
    with caplog.at_level("INFO", logger="distillab.pruning.block_replacement"):
        student = streamline(model, _batches(), [1, 2], steps=30, lr=1e-3)
    assert student.config.num_hidden_layers == 3 and student.config.distillab_teacher_layers == [0, 1, 3]
    original, cut = decoder_layers(model), decoder_layers(student)
    assert all(
        torch.equal(a, b)
        for a, b in zip(original[0].state_dict().values(), cut[0].state_dict().values(), strict=True)
    )
    assert not all(
        torch.equal(a, b)
        for a, b in zip(original[1].state_dict().values(), cut[1].state_dict().values(), strict=True)
    )
    first, last = (float(x) for x in caplog.text.split("(MSE ")[1].split(" in ")[0].split(" -> "))
    assert last < first
    assert all(p.requires_grad for p in student.parameters()) and student.training


@pytest.mark.parametrize("replace", ["linear", "streamline"])
def test_the_prune_app_replaces_the_closest_block(tmp_path, tiny_corpus, replace):
    extra = [
        "prune.score=angular",
        "prune.layers.contiguous=true",
        f"prune.layers.replace={replace}",
        "prune.layers.num_remove=2",
        "prune.layers.streamline.steps=5",
        "heal.enabled=false",
    ]
    results = run(compose_config(prune_overrides(tmp_path, tiny_corpus, *extra), "prune"))
    removed = results["removed_teacher_layers"]
    assert len(removed) == 2 and len(results["kept_teacher_layers"]) == 2
    if replace == "linear":
        assert removed == [removed[0], removed[0] + 1] and removed[0] >= 1  # contiguous, after layer 0
    step = json.loads((tmp_path / "steps" / "step_01" / "step.json").read_text())
    assert step["removed_teacher_layers"] == removed
    ledger = results["cost"]  # no healing: no training FLOPs; the fit's time is in `other`
    assert (
        ledger["flops"] is None
        and ledger["wall_seconds"]["train"] == 0
        and ledger["wall_seconds"]["other"] > 0
    )
