"""Layer removal leaves a consistent model: config, layer_idx, reload, cached generation."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from distillab.errors import DistillabError
from distillab.models.student import check_vocab_match, smaller_student
from distillab.models.surgery import evenly_spaced, remove_layers, teacher_layer_indices
from distillab.models.tiny import build_tiny


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_remove_layers_round_trip(arch, tmp_path):
    teacher, tok = build_tiny(arch, num_hidden_layers=6)
    student = remove_layers(teacher, [1, 4]).eval()
    assert teacher.config.num_hidden_layers == 6 and len(teacher.model.layers) == 6  # teacher untouched
    assert student.config.num_hidden_layers == len(student.model.layers) == 4
    assert teacher_layer_indices(student) == [0, 2, 3, 5]
    if getattr(student.config, "layer_types", None) is not None:
        assert len(student.config.layer_types) == 4
    assert [layer.self_attn.layer_idx for layer in student.model.layers] == [0, 1, 2, 3]

    ids = tok(["the student learned from the teacher"], return_tensors="pt")
    student.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert teacher_layer_indices(reloaded) == [0, 2, 3, 5]
    with torch.no_grad():
        torch.testing.assert_close(student(**ids).logits, reloaded(**ids).logits, rtol=0, atol=0)

    cached = reloaded.generate(**ids, max_new_tokens=6, do_sample=False, use_cache=True)
    uncached = reloaded.generate(**ids, max_new_tokens=6, do_sample=False, use_cache=False)
    assert cached.shape[1] == ids["input_ids"].shape[1] + 6
    assert cached.tolist() == uncached.tolist()


def test_kept_layers_compute_what_they_did_in_the_teacher():
    teacher, tok = build_tiny("llama")
    student = remove_layers(teacher, [2])
    for s_layer, t_idx in zip(student.model.layers, teacher_layer_indices(student), strict=True):
        for (name, p_s), p_t in zip(
            s_layer.named_parameters(), teacher.model.layers[t_idx].parameters(), strict=True
        ):
            assert torch.equal(p_s, p_t), name


def test_repeated_removal_composes_teacher_indices():
    teacher, _ = build_tiny("llama", num_hidden_layers=8)
    once = remove_layers(teacher, [1, 2])  # keeps 0,3,4,5,6,7
    twice = remove_layers(once, [0, 3])  # drops teacher layers 0 and 5
    assert teacher_layer_indices(twice) == [3, 4, 6, 7]


def test_evenly_spaced_keeps_first_and_last():
    assert evenly_spaced(30, 6) == [4, 8, 12, 17, 21, 25]
    assert evenly_spaced(4, 2) == [1, 2]
    for n in range(0, 29):
        chosen = evenly_spaced(30, n)
        assert len(set(chosen)) == n and 0 not in chosen and 29 not in chosen


@pytest.mark.parametrize(
    "remove,message",
    [
        ([4], "layer 4 out of range for a 4-layer model; valid: 0..3"),
        ([0, 1, 2, 3], "cannot remove all 4 layers"),
        ([1, 1], "duplicate layer indices"),
        ([-1], "layer -1 out of range"),
    ],
)
def test_bad_removals_are_one_line_errors(remove, message):
    teacher, _ = build_tiny("llama")
    with pytest.raises(DistillabError, match=message.replace("(", r"\(")):
        remove_layers(teacher, remove)


def test_smaller_config_student_initialised_from_teacher_layers():
    teacher, tok = build_tiny("qwen2")
    student = smaller_student(teacher, {"num_hidden_layers": 2}, init_layers=[0, 3])
    assert student.config.num_hidden_layers == 2 and teacher_layer_indices(student) == [0, 3]
    assert torch.equal(student.model.layers[1].mlp.up_proj.weight, teacher.model.layers[3].mlp.up_proj.weight)
    narrow = smaller_student(teacher, {"num_hidden_layers": 2, "intermediate_size": 32})
    assert narrow.model.layers[0].mlp.up_proj.weight.shape[0] == 32
    with pytest.raises(DistillabError, match="widths differ"):
        smaller_student(teacher, {"num_hidden_layers": 2, "intermediate_size": 32}, init_layers=[0, 3])


def test_vocab_mismatch_is_caught_before_training():
    teacher, tok = build_tiny("llama")
    other, _ = build_tiny("llama", vocab_size=300)
    with pytest.raises(DistillabError, match="vocabulary size 300 differs from the teacher's"):
        check_vocab_match(teacher, other, tok, tok)


def test_as_is_trains_a_copy_so_the_input_model_can_stay_the_frozen_teacher():
    from distillab.models.loading import load_teacher
    from distillab.training.students import build_student

    model, tok = build_tiny("llama")
    model.requires_grad_(False)
    student, student_tok = build_student(model, {"_target_": "distillab.training.students.AsIs"}, tok)
    assert student is not model and student_tok is tok
    assert all(p.requires_grad for p in student.parameters()) and student.training
    assert not any(p.requires_grad for p in model.parameters())
    for (name, a), (_, b) in zip(student.state_dict().items(), model.state_dict().items(), strict=True):
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr(), name
    # no `teacher` in the config: the reference is the input model itself, not a second load
    assert load_teacher({"model": {"name_or_path": "tiny:llama"}}, model, tok) == (model, tok)
