"""Which parameters train: LoRA adapters (peft) merged into the weights at the end, or only the last
layers and the head; and the ``last`` cut. Every run ends with a plain model."""

from __future__ import annotations

import pytest
import torch
from conftest import compose_config, tiny_overrides

from distillab.errors import DistillabError
from distillab.models.surgery import TEACHER_LAYERS_KEY, decoder_layers
from distillab.models.tiny import build_tiny
from distillab.training.tuning import LastLayers, LoRA, from_config, trainable_parameters


def _ids(model) -> torch.Tensor:
    return torch.randint(0, model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))


def _train(model, steps: int = 3) -> None:
    ids = _ids(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(steps):
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def test_lora_trains_the_adapters_only_and_merges_them_into_a_plain_model():
    model, _ = build_tiny("llama")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lora = LoRA(rank=4, alpha=8.0, target_modules=["q_proj", "down_proj"])
    with lora.applied(model) as inside:
        assert inside is model
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
        assert {n.split(".")[-4] for n in trainable} == {"q_proj", "down_proj"}
        _train(model)
        with torch.no_grad():
            adapted = model(input_ids=_ids(model)).logits
    after = model.state_dict()
    assert list(after) == list(before)  # plain names: export, GGUF and evaluation see no adapters
    assert all(p.requires_grad for p in model.parameters())  # as it came in
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=_ids(model)).logits, adapted, rtol=1e-5, atol=1e-5)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {k for k in before if k.endswith(("q_proj.weight", "down_proj.weight"))}


def test_last_layers_trains_the_last_layers_the_norm_and_the_head():
    model, _ = build_tiny("llama", num_hidden_layers=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with LastLayers(num_layers=1).applied(model):
        trainable, total = trainable_parameters(model)
        assert 0 < trainable < total
        _train(model)
    changed = {k.split(".")[1] if k.startswith("model.") else k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}  # fmt: skip
    assert changed == {"layers", "norm", "embed_tokens", "lm_head.weight"}  # the tied head is the embedding
    changed_layers = {k.split(".")[2] for k, v in model.state_dict().items() if ".layers." in k and not torch.equal(v, before[k])}  # fmt: skip
    assert changed_layers == {"3"}
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(
        DistillabError, match=r"^tuning.num_layers: 9 is not valid for a 4-layer model; valid: 1..4"
    ):
        with LastLayers(num_layers=9).applied(model):
            pass


def test_bad_tuning_settings_are_one_line_naming_the_key():
    model, _ = build_tiny("llama")
    with pytest.raises(DistillabError, match=r"^tuning.target_modules: \['qkv'\] are not linear layers"):
        with LoRA(target_modules=["qkv"]).applied(model):
            pass
    with pytest.raises(
        DistillabError, match=r"^heal.tuning: lora together with quantize_aware is not supported"
    ):
        from_config(
            {"_target_": "distillab.training.tuning.LoRA"}, quantize_aware=object(), key="heal.tuning"
        )
    assert from_config(None) is None


@pytest.mark.parametrize(
    ("overrides", "described"),
    [
        (["tuning=lora", "tuning.rank=4"], "LoRA (rank 4"),
        (["student.score=last", "tuning=last_layers", "tuning.num_layers=1"], "the last 1 layers"),
    ],
    ids=["lora", "last_layers"],
)
def test_a_distill_run_tunes_what_it_is_told_and_exports_a_plain_model(
    tiny_corpus, tmp_path, overrides, described
):
    from transformers import AutoModelForCausalLM

    from distillab.distill import run

    results = run(compose_config(tiny_overrides(tmp_path, tiny_corpus, *overrides)))
    assert results["tuning"].startswith(described)
    student = AutoModelForCausalLM.from_pretrained(results["student_dir"])
    assert not any("lora" in k for k in student.state_dict())
    assert len(decoder_layers(student)) == student.config.num_hidden_layers == 2
    if "student.score=last" in overrides:  # the last two of four layers were cut
        assert getattr(student.config, TEACHER_LAYERS_KEY) == [0, 1]
