"""Layer maps, hidden-state alignment, attention transfer and DistillLens."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from distillab.errors import DistillabError
from distillab.models.surgery import remove_layers
from distillab.models.tiny import build_tiny
from distillab.objectives.attention import CAPTURE_KERNEL, attention_kl, attention_log_probs, take_captured_qk
from distillab.objectives.divergences import generalized_jsd, get_divergence
from distillab.objectives.head_divergence import autograd_value_and_grad
from distillab.objectives.hidden import hidden_cosine_distance, hidden_mse
from distillab.objectives.layer_map import build_layer_map, evenly_spaced_interior, uniform_map
from distillab.objectives.lens import lens_divergence, lens_value_and_grad
from distillab.objectives.objective import build_objective
from distillab.objectives.signals import TeacherFinal, TermInputs


def test_layer_maps():
    assert uniform_map(24, 30)[0] == (0, 0) and uniform_map(24, 30)[-1] == (23, 29)
    assert uniform_map(2, 4) == [(0, 1), (1, 3)]
    assert build_layer_map("last_k", 4, 6, k=2) == [(2, 4), (3, 5)]
    teacher, _ = build_tiny("llama", num_hidden_layers=6)
    student = remove_layers(teacher, [1, 4])
    assert build_layer_map("original", 4, 6, student.config) == [(0, 0), (1, 2), (2, 3), (3, 5)]
    assert build_layer_map("explicit", 4, 6, pairs=[[0, 1], [3, 5]]) == [(0, 1), (3, 5)]
    # 23 interior pairs, 4 evenly spaced: student layers 4, 8, 13, 17 at relative depth x 1.25
    assert evenly_spaced_interior(uniform_map(24, 30), 4) == [(4, 5), (8, 10), (13, 17), (17, 21)]
    with pytest.raises(DistillabError, match="pair \\(4, 0\\) out of range"):
        build_layer_map("explicit", 4, 6, pairs=[[4, 0]])
    uncut, _ = build_tiny("llama", num_hidden_layers=4)
    with pytest.raises(DistillabError, match="records no teacher layers"):
        build_layer_map("original", 4, 6, uncut.config)
    assert build_layer_map("original", 6, 6, teacher.config) == [(i, i) for i in range(6)]  # same depth
    with pytest.raises(DistillabError, match="layer_map.kind: unknown 'depth'"):
        build_layer_map("depth", 4, 6)


def test_hidden_distances_match_formulas():
    g = torch.Generator().manual_seed(0)
    s, t = (
        torch.randn(2, 3, 5, generator=g, dtype=torch.float64),
        torch.randn(2, 3, 5, generator=g, dtype=torch.float64),
    )
    torch.testing.assert_close(hidden_mse(s, t).double(), ((s - t) ** 2).sum(-1) / 5)
    cos = (s * t).sum(-1) / (s.norm(dim=-1) * t.norm(dim=-1))
    torch.testing.assert_close(hidden_cosine_distance(s, t).double(), 1 - cos, rtol=1e-5, atol=1e-6)


def _forward(model, ids, **flags):
    return model(input_ids=ids, output_hidden_states=True, **flags)


def _inputs(student, teacher, ids):
    s_out = _forward(student, ids)
    s_qk = take_captured_qk(student)
    with torch.no_grad():
        t_out = _forward(teacher, ids)
    targets = torch.cat([ids[:, 1:], torch.full((ids.shape[0], 1), -100)], dim=1)
    return TermInputs(
        student_logits=s_out.logits,
        targets=targets,
        mask=targets != -100,
        teacher_logits=t_out.logits,
        teacher_final=TeacherFinal(logits=t_out.logits),
        student_hidden=s_out.hidden_states,
        teacher_hidden=t_out.hidden_states,
        student_qk=s_qk,
        teacher_qk=take_captured_qk(teacher),
    )


def test_hidden_alignment_is_zero_for_the_teachers_own_layers_and_projects_when_widths_differ():
    teacher, _ = build_tiny("llama", num_hidden_layers=6)
    student = remove_layers(teacher, [1, 4])
    ids = torch.randint(0, 300, (2, 12))
    objective = build_objective(
        {"hidden": {"_target_": "distillab.objectives.hidden.HiddenStateAlignment", "layer_map": "original"}}
    )
    objective.setup(student, teacher)
    _, terms = objective(_inputs(student, teacher, ids))
    assert terms["hidden"].item() > 0  # layer 1 was removed, so later layers see other inputs
    first = build_objective(
        {
            "hidden": {
                "_target_": "distillab.objectives.hidden.HiddenStateAlignment",
                "layer_map": "explicit",
                "pairs": [[0, 0]],
            }
        }
    )
    first.setup(student, teacher)
    assert first(_inputs(student, teacher, ids))[1]["hidden"].item() < 1e-10  # identical first layer

    narrow, _ = build_tiny("llama", hidden_size=32, num_hidden_layers=2, seed=3)
    projected = build_objective(
        {"hidden": {"_target_": "distillab.objectives.hidden.HiddenStateAlignment", "layer_map": "uniform"}}
    )
    projected.setup(narrow, teacher)
    params = list(projected.parameters())
    assert len(params) == 2 and params[0].shape == (64, 32)  # one Linear(32 -> 64) per pair
    loss, _ = projected(_inputs(narrow, teacher, ids))
    loss.backward()
    assert params[0].grad is not None and narrow.model.layers[0].mlp.up_proj.weight.grad is not None


def test_attention_transfer_matches_eager_weights_and_is_zero_for_identical_models():
    teacher, _ = build_tiny("qwen2")  # grouped-query attention: 4 query heads, 2 kv heads
    student = remove_layers(teacher, [])
    ids = torch.randint(0, 300, (2, 10))
    teacher.set_attn_implementation("eager")
    with torch.no_grad():
        eager = teacher(input_ids=ids, output_attentions=True).attentions
    teacher.set_attn_implementation("sdpa")
    objective = build_objective(
        {
            "attention": {
                "_target_": "distillab.objectives.attention.AttentionTransfer",
                "layer_map": "explicit",
                "pairs": [[0, 0], [1, 1]],
            }
        }
    )
    objective.setup(student, teacher)
    assert teacher.config._attn_implementation == CAPTURE_KERNEL
    inputs = _inputs(student, teacher, ids)
    assert sorted(inputs.teacher_qk) == [0, 1]  # only mapped layers are kept
    for layer in (0, 1):  # rebuilt weights == the eager kernel's, per query head
        qk = inputs.teacher_qk[layer]
        rebuilt = attention_log_probs(qk["query"], qk["key"], qk["mask"], qk["scaling"]).exp()
        torch.testing.assert_close(rebuilt, eager[layer], rtol=1e-5, atol=1e-6)
    assert objective(inputs)[1]["attention"].abs().item() < 1e-6

    objective.teardown(student, teacher)
    assert teacher.config._attn_implementation == "sdpa"
    with torch.no_grad():
        teacher(input_ids=ids)
    assert take_captured_qk(teacher) == {}  # capture removed with the term


def test_attention_transfer_trains_the_student_with_padding():
    teacher, _ = build_tiny("llama")
    student, _ = build_tiny("llama", seed=4)
    objective = build_objective(
        {
            "attention": {
                "_target_": "distillab.objectives.attention.AttentionTransfer",
                "layer_map": "uniform",
            }
        }
    )
    objective.setup(student, teacher)
    ids = torch.randint(0, 300, (2, 9))
    attention_mask = torch.ones_like(ids)
    attention_mask[1, :3] = 0  # left padding: fully masked query rows must stay finite
    s_out = student(input_ids=ids, attention_mask=attention_mask)
    s_qk = take_captured_qk(student)
    with torch.no_grad():
        t_logits = teacher(input_ids=ids, attention_mask=attention_mask).logits
    mask = attention_mask.bool()
    inputs = TermInputs(
        student_logits=s_out.logits,
        targets=ids,
        mask=mask,
        teacher_logits=t_logits,
        student_qk=s_qk,
        teacher_qk=take_captured_qk(teacher),
    )
    loss, terms = objective(inputs)
    loss.backward()
    assert torch.isfinite(terms["attention"]) and terms["attention"].item() > 0
    grad = student.model.layers[0].self_attn.q_proj.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_attention_kl_head_averages_when_head_counts_differ():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(1, 2, 3, 3, generator=g).softmax(-1)
    t = torch.randn(1, 4, 3, 3, generator=g).softmax(-1)
    s_avg, t_avg = s.mean(1), t.mean(1)
    want = (t_avg * (t_avg.log() - s_avg.log())).sum(-1)
    torch.testing.assert_close(attention_kl(s.log(), t.log()), want, rtol=1e-5, atol=1e-6)


def _lens_reference(student, teacher, s_h, t_h, mask):
    """Per example, per token, float64: JSD(lens_teacher, lens_student) averaged over unmasked tokens."""
    values = []
    for b in range(s_h.shape[0]):
        for i in range(s_h.shape[1]):
            if mask[b, i]:
                s_logp = F.log_softmax(student.lm_head(student.model.norm(s_h[b, i])).double(), -1)
                t_logp = F.log_softmax(teacher.lm_head(teacher.model.norm(t_h[b, i])).double(), -1)
                values.append(generalized_jsd(t_logp, s_logp, 0.5))
    return torch.stack(values).mean()


def _jsd(p, q):
    return generalized_jsd(p, q, 0.5)


def _lens_case(seed=0):
    teacher, _ = build_tiny("llama")
    student, _ = build_tiny("llama", seed=5)
    g = torch.Generator().manual_seed(seed)
    s_h, t_h = torch.randn(3, 7, 64, generator=g), torch.randn(3, 7, 64, generator=g)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[0, 5:], mask[2, 2:] = False, False  # ragged rows: batch > 1 with padding
    return student, teacher, s_h, t_h, mask


def test_lens_divergence_chunks_and_masks_like_the_per_token_formula():
    student, teacher, s_h, t_h, mask = _lens_case()
    want = _lens_reference(student, teacher, s_h, t_h, mask)
    with torch.no_grad():
        for chunk in (1, 4, 1000):
            for value_and_grad in (lens_value_and_grad("jsd", 0.5), autograd_value_and_grad(_jsd)):
                got = lens_divergence(
                    [s_h], [t_h], mask, student, teacher, value_and_grad, chunk_tokens=chunk
                )
                torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
        # two pairs: the mean of the two pairs' means
        two = lens_divergence([s_h, t_h], [t_h, s_h], mask, student, teacher, lens_value_and_grad("jsd"))
        other = _lens_reference(student, teacher, t_h, s_h, mask)
        torch.testing.assert_close(two.double(), (want + other) / 2, rtol=1e-5, atol=1e-6)


def _reference_grads(student, teacher, s_h, t_h, mask, divergence):
    """Plain autograd through norm, head, log-softmax and the divergence, every token at once."""
    keep = mask.reshape(-1)
    s_logp = F.log_softmax(student.lm_head(student.model.norm(s_h.reshape(-1, 64)[keep])), -1)
    with torch.no_grad():
        t_logp = F.log_softmax(teacher.lm_head(teacher.model.norm(t_h.reshape(-1, 64)[keep])), -1)
    divergence(t_logp, s_logp).mean().backward()


@pytest.mark.parametrize(("name", "beta"), [("jsd", 0.5), ("jsd", 0.9), ("reverse_kl", None)])
def test_lens_gradients_match_plain_autograd(name, beta):
    """The gradients formed in the forward pass (analytic JSD, or autograd per chunk) equal autograd's."""
    fn = (lambda p, q: generalized_jsd(p, q, beta)) if name == "jsd" else get_divergence(name)  # noqa: E731
    grads = []
    for fused in (False, True):
        student, teacher, s_h, t_h, mask = _lens_case(seed=1)
        s_h.requires_grad_(True)
        if fused:
            value_and_grad = lens_value_and_grad(name, beta)
            lens_divergence([s_h], [t_h], mask, student, teacher, value_and_grad, chunk_tokens=4).backward()
        else:
            _reference_grads(student, teacher, s_h, t_h, mask, fn)
        assert teacher.lm_head.weight.grad is None  # the teacher is never differentiated
        grads.append((s_h.grad, student.lm_head.weight.grad, student.model.norm.weight.grad))
    for got, want in zip(grads[1], grads[0], strict=True):
        assert want.abs().sum() > 0
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)


def test_lens_token_sample_scores_the_chosen_rows_and_averages_to_the_full_loss():
    student, teacher, s_h, t_h, mask = _lens_case()
    vg = lens_value_and_grad("jsd")
    with torch.no_grad():
        full = lens_divergence([s_h], [t_h], mask, student, teacher, vg)
        n = int(mask.sum())
        per_row = [
            lens_divergence([s_h], [t_h], mask, student, teacher, vg, rows=torch.tensor([i]))
            for i in range(n)
        ]
        torch.testing.assert_close(torch.stack(per_row).mean(), full)  # every row weighs the same
        pair = lens_divergence([s_h], [t_h], mask, student, teacher, vg, rows=torch.tensor([0, 3]))
        torch.testing.assert_close(pair, (per_row[0] + per_row[3]) / 2)


def test_lens_term_samples_tokens_only_while_training():
    teacher, _ = build_tiny("llama", num_hidden_layers=8)
    student = remove_layers(teacher, [2, 5])
    ids = torch.randint(0, 300, (2, 8), generator=torch.Generator().manual_seed(0))
    values = {}
    for fraction in (1.0, 0.25):
        objective = build_objective(
            {
                "lens": {
                    "_target_": "distillab.objectives.lens.DistillLensTerm",
                    "num_pairs": 2,
                    "token_fraction": fraction,
                }
            }
        )
        objective.setup(student, teacher)
        with torch.no_grad():
            values[fraction, "eval"] = objective(_inputs(student, teacher, ids))[1]["lens"]
        torch.manual_seed(0)
        values[fraction, "train"] = objective(_inputs(student, teacher, ids))[1]["lens"]
    assert values[0.25, "eval"] == values[1.0, "eval"]  # validation scores every token
    assert values[0.25, "train"] != values[1.0, "train"]
    assert "0.25 of the tokens" in objective.terms["lens"].describe()
    with pytest.raises(DistillabError, match="token_fraction must be in \\(0, 1\\], got 0"):
        build_objective(
            {"lens": {"_target_": "distillab.objectives.lens.DistillLensTerm", "token_fraction": 0}}
        )


def test_lens_pairs_default_to_evenly_spaced_interior():
    teacher, _ = build_tiny("llama", num_hidden_layers=8)
    student = remove_layers(teacher, [2, 5])
    objective = build_objective(
        {"lens": {"_target_": "distillab.objectives.lens.DistillLensTerm", "num_pairs": 2}}
    )
    objective.setup(student, teacher)
    pairs = objective.terms["lens"].layer_map
    assert len(pairs) == 2 and all(s < student.config.num_hidden_layers - 1 for s, _ in pairs)
    ids = torch.randint(0, 300, (2, 8))
    assert objective(_inputs(student, teacher, ids))[1]["lens"].item() > 0


def test_lens_last_k_pairs_the_last_layers_before_the_final_one():
    teacher, _ = build_tiny("llama", num_hidden_layers=8)
    student = remove_layers(teacher, [2, 5])  # 6 layers
    lens = {"_target_": "distillab.objectives.lens.DistillLensTerm", "num_pairs": 2, "layer_map": "last_k"}
    objective = build_objective({"lens": lens})
    objective.setup(student, teacher)
    assert objective.terms["lens"].layer_map == [(3, 5), (4, 6)]  # the final pair (5, 7) is the logits'


def test_contrastive_term_samples_every_n_steps_and_trains_both_halves():
    from distillab.objectives.contrastive import ContrastiveDistillation

    teacher, tok = build_tiny("llama")
    student = remove_layers(teacher, [1])
    term = build_objective(
        {
            "contrastive": {
                "_target_": "distillab.objectives.contrastive.ContrastiveDistillation",
                "regenerate_every": 2,
                "num_prompts": 2,
                "max_new_tokens": 3,
            }
        }
    )
    term.setup(student, teacher)
    contrastive: ContrastiveDistillation = term.terms["contrastive"]
    contrastive.attach_documents(tok, ["Question: 1 + 1?\nAnswer:", "Once upon a time", "The teacher said"])
    ids = torch.randint(0, 300, (2, 8))
    samples = []
    for _ in range(3):
        loss, values = term(_inputs(student, teacher, ids))
        samples.append(contrastive._samples["student"]["input_ids"])
        loss.backward()
    assert samples[0] is samples[1] and samples[2] is not samples[1]  # regenerated at step 2 only
    assert samples[0].shape[1] <= 3 + max(len(tok(p)["input_ids"]) for p in contrastive.prompts)
    assert student.model.layers[0].mlp.up_proj.weight.grad is not None and torch.isfinite(
        values["contrastive"]
    )
    term.eval()
    only_pull, _ = term(_inputs(student, teacher, ids))  # validation: no sampling
    assert torch.isfinite(only_pull)
    with pytest.raises(DistillabError, match="contrastive alpha must be in"):
        build_objective(
            {
                "contrastive": {
                    "_target_": "distillab.objectives.contrastive.ContrastiveDistillation",
                    "alpha": 1.5,
                }
            }
        )


def test_contrastive_can_pull_up_on_teacher_generated_responses():
    teacher, tok = build_tiny("llama")
    student = remove_layers(teacher, [1])
    spec = {
        "contrastive": {
            "_target_": "distillab.objectives.contrastive.ContrastiveDistillation",
            "num_prompts": 2,
            "max_new_tokens": 3,
            "teacher_responses": "generate",
        }
    }
    term = build_objective(spec)
    term.setup(student, teacher)
    contrastive = term.terms["contrastive"]
    contrastive.attach_documents(tok, ["Question: 1 + 1?\nAnswer:", "Once upon a time"])
    loss, _ = term(_inputs(student, teacher, torch.randint(0, 300, (2, 8))))
    loss.backward()
    teacher_ids = contrastive._samples["teacher"]["input_ids"]
    prompt_len = tok(["Question: 1 + 1?\nAnswer:", "Once upon a time"], return_tensors="pt", padding=True)[
        "input_ids"
    ].shape[1]
    assert teacher_ids.shape[1] > prompt_len and contrastive._samples["teacher"]["response_mask"].any()
    with pytest.raises(DistillabError, match="teacher_responses must be batch or generate"):
        build_objective(
            {
                "contrastive": {
                    "_target_": "distillab.objectives.contrastive.ContrastiveDistillation",
                    "teacher_responses": "data",
                }
            }
        )


def test_contrastive_push_down_per_sample_equals_the_batched_formula():
    from distillab.objectives.contrastive import ContrastiveDistillation
    from distillab.objectives.divergences import masked_mean, skew_reverse_kl

    teacher, _ = build_tiny("llama")
    student, _ = build_tiny("llama", seed=2)
    term = ContrastiveDistillation(alpha=0.1, temperature=2.0, chunk_tokens=3)
    term.setup(student, teacher)
    ids = torch.randint(0, 300, (3, 8))
    attention = torch.ones_like(ids)
    attention[0, :2] = 0  # left padding, as generate() leaves it
    response = torch.zeros_like(ids, dtype=torch.bool)
    response[:, 4:-1] = True
    samples = {"input_ids": ids, "attention_mask": attention, "response_mask": response}

    s_logits = student(input_ids=ids, attention_mask=attention).logits
    with torch.no_grad():
        t_logits = teacher(input_ids=ids, attention_mask=attention).logits
    want = masked_mean(
        skew_reverse_kl(F.log_softmax(t_logits / 2.0, -1), F.log_softmax(s_logits / 2.0, -1), 0.1), response
    )
    weight = student.model.layers[1].mlp.up_proj.weight
    (want_grad,) = torch.autograd.grad(want, weight)
    got = term._push_down(samples)
    (got_grad,) = torch.autograd.grad(got, weight)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-4, atol=1e-7)


def test_lens_values_need_no_gradients_under_inference_mode():
    """Lightning validates under inference_mode: every divergence still gives its value there."""
    student, teacher, s_h, t_h, mask = _lens_case()
    for value_and_grad in (lens_value_and_grad("jsd"), lens_value_and_grad("reverse_kl")):
        with torch.no_grad():
            want = lens_divergence([s_h], [t_h], mask, student, teacher, value_and_grad)
        with torch.inference_mode():
            got = lens_divergence([s_h], [t_h], mask, student, teacher, value_and_grad)
        torch.testing.assert_close(got, want)


def test_analytic_jsd_is_finite_where_a_logit_is_minus_infinity():
    from distillab.objectives.head_divergence import jsd_value_and_grad

    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(3, 11, generator=g), torch.randn(3, 11, generator=g)
    s[0, 2], t[1, 4] = float("-inf"), float("-inf")  # masked vocabulary entries
    scratch_store = {}

    def scratch(k):
        return scratch_store.setdefault(k, torch.empty(3, 11))

    values, grad = jsd_value_and_grad(0.5)(F.log_softmax(t, -1), s.clone(), 1.0, scratch)
    assert torch.isfinite(values).all() and torch.isfinite(grad).all()
    z = s.clone().requires_grad_(True)
    want = generalized_jsd(F.log_softmax(t, -1), F.log_softmax(z, -1), 0.5)
    want.sum().backward()
    torch.testing.assert_close(values, want.detach(), rtol=1e-5, atol=1e-6)
    finite = torch.isfinite(s)
    torch.testing.assert_close(grad[finite], z.grad[finite], rtol=1e-4, atol=1e-6)
