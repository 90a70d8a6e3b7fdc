"""Cross-tokenizer distillation: alignment through character offsets, ULD and hybrid against
hand-computed values, the cross_kd term's gradients, and a run whose teacher has another tokenizer."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from distillab.data.token_alignment import (
    TokenAligner,
    aligned_positions,
    decode_with_ends,
    shared_tokens,
    token_ends,
)
from distillab.errors import DistillabError
from distillab.models.tiny import build_tiny, tiny_metaspace_tokenizer, tiny_tokenizer
from distillab.objectives.cross_tokenizer import CrossTokenizerInputs, CrossTokenizerKD, teacher_head
from distillab.objectives.cross_vocab import TeacherSummary, hybrid_distance, summarize_teacher, uld_distance
from distillab.objectives.divergences import forward_kl
from distillab.objectives.signals import TermInputs

TEXT = "The teacher was large and wise, and the student was small and quick."


def test_token_ends_cut_only_after_the_last_piece_of_a_character():
    # byte-level BPE splits a 3-byte character over tokens that share its offsets (46, 48), (47, 48)
    assert token_ends([(0, 5), (5, 6), (46, 48), (47, 48), (48, 49)]) == [5, 6, None, 48, 49]


def test_aligned_positions_pair_equal_ends_and_skip_each_last_token():
    student = [3, 4, 8, 10]  # "The" " t" "each" "er"
    teacher = [0, 3, 10]  # BOS, "The", " teacher"
    # 3 pairs (0, 1); 10 is the last token of both (nothing follows), so it does not pair
    assert aligned_positions(student, teacher) == [(0, 1)]
    assert aligned_positions([3, 10, 12], [0, 3, 10, 12]) == [(0, 1), (1, 2)]


def _texts_before(tokenizer, ids: list[int], upto: int) -> str:
    return tokenizer.decode(ids[: upto + 1], skip_special_tokens=True)


def test_each_pair_predicts_the_same_next_text():
    student_tok, teacher_tok = tiny_tokenizer(), tiny_metaspace_tokenizer()
    ids = (
        student_tok(TEXT)["input_ids"] + [student_tok.eos_token_id] + student_tok("48 + 24 = 72")["input_ids"]
    )
    row = torch.tensor([ids])
    aligned = TokenAligner(student_tok, teacher_tok)(row, torch.ones_like(row))
    assert aligned.teacher_ids[0, 0] == teacher_tok.bos_token_id  # Gemma-like: BOS in front
    assert (
        teacher_tok.eos_token_id in aligned.teacher_ids[0].tolist()
    )  # the student's EOS became the teacher's
    s_ids, t_ids = ids, aligned.teacher_ids[0].tolist()
    assert len(aligned.pairs) >= len(ids) // 2
    for b, j, k in aligned.pairs.tolist():
        assert b == 0
        # the text each model has read so far is the same
        assert _texts_before(student_tok, s_ids, j) == _texts_before(teacher_tok, t_ids, k)
    eos_j, eos_k = ids.index(student_tok.eos_token_id), t_ids.index(teacher_tok.eos_token_id)
    # the next document starts for the teacher with its BOS, as every text it was trained on did;
    # the student's EOS pairs with that BOS (both predict the next document's first token)
    assert t_ids[eos_k + 1] == teacher_tok.bos_token_id
    assert [p for p in aligned.pairs.tolist() if p[1] == eos_j] == [[0, eos_j, eos_k + 1]]


def test_an_id_outside_the_students_vocabulary_is_a_boundary_not_an_empty_token():
    student_tok, teacher_tok = tiny_tokenizer(), tiny_metaspace_tokenizer()
    first, second = student_tok("the teacher")["input_ids"], student_tok(" was wise")["input_ids"]
    unknown = len(student_tok) + 5  # a padded embedding table can sample it on-policy
    row = torch.tensor([first + [unknown] + second])
    aligned = TokenAligner(student_tok, teacher_tok)(row, torch.ones_like(row))
    t_ids = aligned.teacher_ids[0].tolist()
    assert t_ids.count(teacher_tok.eos_token_id) == 1
    j = len(first)
    assert [k for _, jj, k in aligned.pairs.tolist() if jj == j] == [
        t_ids.index(teacher_tok.eos_token_id) + 1
    ]
    assert len({k for _, _, k in aligned.pairs.tolist()}) == len(
        aligned.pairs
    )  # one student position per pair


def test_a_non_canonical_student_sequence_keeps_its_tokens_and_aligns():
    # sampled text need not be the tokenizer's own encoding: " the" spelt as " t" + "he"
    student_tok, teacher_tok = tiny_tokenizer(), tiny_metaspace_tokenizer()
    pieces = [student_tok.convert_tokens_to_ids(p) for p in ("Ġt", "he", "Ġstudent")]
    assert student_tok.unk_token_id not in pieces and None not in pieces
    aligned = TokenAligner(student_tok, teacher_tok)(
        torch.tensor([pieces]), torch.ones(1, 3, dtype=torch.long)
    )
    t_ids = aligned.teacher_ids[0].tolist()
    assert teacher_tok.decode(t_ids, skip_special_tokens=True) == " the student"
    # " t" ends inside the teacher's " the": no pair; " the" ends where the teacher's " the" ends
    assert [
        (j, teacher_tok.decode(t_ids[: k + 1], skip_special_tokens=True))
        for _, j, k in aligned.pairs.tolist()
    ] == [(1, " the")]


def test_decode_with_ends_marks_cuts_inside_a_character():
    text, ends = decode_with_ends([b"a", "日".encode()[:2], "日".encode()[2:], b"b"])
    assert text == "a日b" and ends == [1, None, 2, 3]


def test_same_tokenizer_pairs_every_position():
    tok = tiny_tokenizer()
    row = torch.tensor([tok(TEXT)["input_ids"]])
    aligned = TokenAligner(tok, tok)(row, torch.ones_like(row))
    n = row.shape[1]
    assert aligned.pairs.tolist() == [[0, j, j] for j in range(n - 1)]


def test_uld_matches_the_hand_computed_distance():
    student = torch.tensor([[0.5, 0.3, 0.2]])
    teacher_sorted = torch.tensor([[0.6, 0.2, 0.1, 0.1]])
    # sorted: s = .5 .3 .2 0, t = .6 .2 .1 .1 -> |.1| + |.1| + |.1| + |.1|
    assert uld_distance(student, teacher_sorted).item() == pytest.approx(0.4)
    # top 2: |.5 - .6| + |.3 - .2| = .2, tails .2 and .2 -> +0: a lower bound of the exact .4
    assert uld_distance(student, teacher_sorted[:, :2], top_k=2).item() == pytest.approx(0.2)
    # tails differ: top 1 -> |.5 - .6| + |(1 - .5) - (1 - .6)| = .2
    assert uld_distance(student, teacher_sorted[:, :1], top_k=1).item() == pytest.approx(0.2)


def test_hybrid_matches_the_hand_computed_divergence():
    # student vocab 3, teacher vocab 4; shared: student 0 <-> teacher 1, student 2 <-> teacher 3
    s_p = torch.tensor([[0.5, 0.3, 0.2]])
    t_p = torch.tensor([[0.1, 0.4, 0.3, 0.2]])
    t_shared = torch.tensor([1, 3])
    t_summary = TeacherSummary(
        sorted_probs=torch.tensor([[0.3, 0.1]]),  # unshared teacher probabilities, decreasing
        shared_logp=t_p[:, t_shared].log(),
        rest_logp=torch.tensor([0.4]).log(),
    )
    exact, rest = hybrid_distance(s_p.log(), t_summary, torch.tensor([0, 2]), forward_kl)
    # coarsened: teacher (.4, .2, rest .4), student (.5, .2, rest .3)
    expected = 0.4 * math.log(0.4 / 0.5) + 0.2 * math.log(0.2 / 0.2) + 0.4 * math.log(0.4 / 0.3)
    assert exact.item() == pytest.approx(expected, rel=1e-5)
    # unshared: student (.3), teacher (.3, .1) -> |.3 - .3| + |0 - .1|
    assert rest.item() == pytest.approx(0.1, abs=1e-6)


def test_hybrids_top_k_part_is_a_lower_bound_and_exact_once_k_covers_the_vocabulary():
    # the shipped preset runs hybrid with top_k: the unshared ULD then reads the teacher's top k only
    torch.manual_seed(0)
    s_logp = torch.randn(6, 40).log_softmax(-1)
    t_logits = torch.randn(6, 50) * 3
    s_shared, t_shared = torch.arange(0, 40, 2), torch.arange(1, 41, 2)

    def unshared(top_k):
        summary = summarize_teacher(t_logits, 1.0, top_k, t_shared)
        return hybrid_distance(s_logp, summary, s_shared, forward_kl, top_k)

    exact_kl, exact_rest = unshared(None)
    for k in (1, 3, 8):
        kl, rest = unshared(k)
        assert torch.allclose(kl, exact_kl)  # the shared part does not depend on k
        assert (rest <= exact_rest + 1e-6).all() and (rest >= 0).all()
    assert torch.allclose(unshared(60)[1], exact_rest, atol=1e-6)  # k beyond both vocabularies


def test_shared_tokens_have_the_same_text_in_both_vocabularies():
    student_tok, teacher_tok = tiny_tokenizer(), tiny_metaspace_tokenizer()
    s_ids, t_ids = shared_tokens(student_tok, teacher_tok)
    assert len(s_ids) > 20
    for s, t in zip(s_ids.tolist(), t_ids.tolist(), strict=True):
        s_text = student_tok.convert_tokens_to_string([student_tok.convert_ids_to_tokens(s)])
        t_piece = teacher_tok.convert_ids_to_tokens(t)
        assert s_text == t_piece.replace("▁", " ")
    assert student_tok.eos_token_id not in s_ids.tolist()


def _cross_inputs(student, teacher, student_tok, teacher_tok, text=TEXT):
    row = torch.tensor([student_tok(text)["input_ids"]])
    aligned = TokenAligner(student_tok, teacher_tok)(row, torch.ones_like(row))
    logits = student(input_ids=row).logits
    with torch.no_grad():
        hidden = teacher.base_model(input_ids=aligned.teacher_ids).last_hidden_state
    mask = torch.ones_like(row, dtype=torch.bool)
    cross = CrossTokenizerInputs(aligned.pairs, hidden, teacher_head(teacher))
    return TermInputs(student_logits=logits, targets=row, mask=mask, cross_teacher=cross), aligned, hidden


@pytest.mark.parametrize("loss", ["uld", "hybrid"])
def test_cross_kd_equals_the_unchunked_loss_and_trains_the_student(loss):
    torch.manual_seed(0)
    student, student_tok = build_tiny("llama")
    teacher, teacher_tok = build_tiny("llama+sp", seed=1)
    student.train()
    term = CrossTokenizerKD(loss=loss, temperature=2.0, top_k=None, chunk_tokens=3)
    term.attach_tokenizers(student_tok, teacher_tok)
    inputs, aligned, hidden = _cross_inputs(student, teacher, student_tok, teacher_tok)
    leaf = inputs.student_logits.detach().requires_grad_(True)  # compare gradients w.r.t. the logits
    inputs = inputs.replace(student_logits=leaf)
    value = term(inputs)
    (grad,) = torch.autograd.grad(value, leaf)
    # reference: every pair at once, straight from full logits, differentiated by autograd
    b, j, k = aligned.pairs.unbind(-1)
    s_logp = F.log_softmax(leaf[b, j] / 2.0, -1)
    t_logp = F.log_softmax(teacher.lm_head(hidden[b, k]) / 2.0, -1)
    if loss == "uld":
        s_sorted = s_logp.exp().sort(-1, descending=True).values
        t_sorted = t_logp.exp().sort(-1, descending=True).values
        width = max(s_sorted.shape[-1], t_sorted.shape[-1])
        ref = (
            (
                F.pad(s_sorted, (0, width - s_sorted.shape[-1]))
                - F.pad(t_sorted, (0, width - t_sorted.shape[-1]))
            )
            .abs()
            .sum(-1)
        )
    else:
        s_sh, t_sh = term.student_shared, term.teacher_shared
        s_c = torch.cat(
            [s_logp[:, s_sh], s_logp.index_fill(-1, s_sh, -math.inf).logsumexp(-1, keepdim=True)], -1
        )
        t_c = torch.cat(
            [t_logp[:, t_sh], t_logp.index_fill(-1, t_sh, -math.inf).logsumexp(-1, keepdim=True)], -1
        )
        exact = (t_c.exp() * (t_c - s_c)).sum(-1) * 4.0  # T² = 4
        s_un = s_logp.exp().index_fill(-1, s_sh, 0).sort(-1, descending=True).values
        t_un = t_logp.exp().index_fill(-1, t_sh, 0).sort(-1, descending=True).values
        width = max(s_un.shape[-1], t_un.shape[-1])
        ref = exact + (
            F.pad(s_un, (0, width - s_un.shape[-1])) - F.pad(t_un, (0, width - t_un.shape[-1]))
        ).abs().sum(-1)
    assert value.item() == pytest.approx(ref.mean().item(), rel=1e-4)
    (ref_grad,) = torch.autograd.grad(ref.mean(), leaf)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-3, atol=1e-7)
    assert grad.abs().sum() > 0


def test_masked_positions_are_not_distilled():
    student, student_tok = build_tiny("llama")
    teacher, teacher_tok = build_tiny("llama+sp", seed=1)
    term = CrossTokenizerKD(loss="uld", top_k=None)
    term.attach_tokenizers(student_tok, teacher_tok)
    inputs, aligned, _ = _cross_inputs(student, teacher, student_tok, teacher_tok)
    leaf = inputs.student_logits.detach().requires_grad_(True)
    inputs = inputs.replace(student_logits=leaf)
    inputs.mask[0, :5] = False  # e.g. a prompt
    (grad,) = torch.autograd.grad(term(inputs), leaf)
    assert grad[0, :5].abs().sum() == 0 and grad[0, 5:].abs().sum() > 0


def test_no_pair_left_still_gives_a_differentiable_zero():
    student, tok = build_tiny("llama")
    term = CrossTokenizerKD(loss="uld")
    term.attach_tokenizers(tok, tok)
    inputs, _, _ = _cross_inputs(student, student, tok, tok)
    inputs.mask[:] = False
    value = term(inputs)
    value.backward()  # an on-policy batch whose only term this is must not fail here
    assert value.item() == 0.0


def test_a_students_bos_becomes_the_teachers_bos_and_same_tokenizers_pair_everything():
    tok = tiny_tokenizer(bos=True)
    row = torch.tensor([tok(TEXT)["input_ids"]])
    assert row[0, 0] == tok.bos_token_id
    aligned = TokenAligner(tok, tok)(row, torch.ones_like(row))
    assert torch.equal(aligned.teacher_ids, row)  # BOS is not turned into EOS, nor doubled
    assert aligned.pairs.tolist() == [[0, j, j] for j in range(row.shape[1] - 1)]


def test_left_padding_is_refused():
    tok = tiny_tokenizer()
    row = torch.tensor([tok(TEXT)["input_ids"]])
    mask = torch.ones_like(row)
    mask[0, 0] = 0
    with pytest.raises(DistillabError, match="right padding"):
        TokenAligner(tok, tiny_metaspace_tokenizer())(row, mask)


def test_uld_of_a_model_with_itself_is_zero():
    model, tok = build_tiny("llama")
    term = CrossTokenizerKD(loss="uld", top_k=None)
    term.attach_tokenizers(tok, tok)
    with torch.no_grad():
        inputs, _, _ = _cross_inputs(model, model, tok, tok)
        assert term(inputs).item() == pytest.approx(0.0, abs=1e-6)


def test_hybrid_without_tokenizers_is_refused():
    term = CrossTokenizerKD(loss="hybrid")
    model, tok = build_tiny("llama")
    inputs, _, _ = _cross_inputs(model, model, tok, tok)
    with pytest.raises(DistillabError, match="attach_tokenizers"):
        term(inputs)


def test_bad_cross_kd_settings_name_the_key():
    with pytest.raises(DistillabError, match="loss: 'kl' is not one of uld, hybrid"):
        CrossTokenizerKD(loss="kl")
    with pytest.raises(DistillabError, match="top_k: must be >= 1"):
        CrossTokenizerKD(top_k=0)


def test_a_run_with_a_teacher_of_another_tokenizer_trains_evaluates_and_exports(tiny_corpus, tmp_path):
    from distillab.distill import run
    from tests.conftest import compose_config, tiny_overrides

    cfg = compose_config(
        tiny_overrides(
            tmp_path / "run",
            tiny_corpus,
            "model@teacher=tiny_llama",
            "teacher.name_or_path=tiny:llama+sp",
            "student=as_is",
            "objective=cross_kd",
            "eval=demo",
            "eval.tasks.arc_challenge_margin.limit=4",
            "eval.tasks.gsm8k_bpb.limit=2",
            "eval.perplexity.wikitext2.max_tokens=512",
            "export=true",
        )
    )
    results = run(cfg)
    assert results["train_metrics"]["train/loss_cross_kd"] > 0
    assert (tmp_path / "run" / "student" / "config.json").is_file()
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    keys = set(saved["retention"])
    assert not any(
        k.startswith("wikitext2/") for k in keys
    )  # per-token values of two tokenizers: no retention
    assert any(k.startswith("arc_challenge_margin/") for k in keys)


@pytest.mark.parametrize("term", ["kd", "hidden"])
def test_same_position_terms_next_to_a_teacher_of_another_tokenizer_are_refused(tiny_corpus, tmp_path, term):
    from distillab.distill import run
    from tests.conftest import compose_config, tiny_overrides

    extra = {
        "kd": "+objective.terms.kd={_target_:distillab.objectives.terms.SoftLabelKD,weight:0.5,temperature:2.0}",
        "hidden": "+objective.terms.hidden={_target_:distillab.objectives.hidden.HiddenStateAlignment,weight:0.5}",
    }
    cfg = compose_config(
        tiny_overrides(
            tmp_path / "run",
            tiny_corpus,
            "model@teacher=tiny_llama",
            "teacher.name_or_path=tiny:llama+sp",
            "student=as_is",
            "objective=cross_kd",
            extra[term],
        )
    )
    with pytest.raises(DistillabError, match=f"objective.terms.{term}: .* needs one tokenizer"):
        run(cfg)


def test_what_cross_kd_cannot_do_is_refused_before_any_evaluation():
    from distillab.distill import check_cross_tokenizer_teacher

    teacher, tok = build_tiny("llama")
    check_cross_tokenizer_teacher(teacher, tok, {"strategy": "auto"})  # the plain case passes
    with pytest.raises(DistillabError, match="trainer: FSDP with a teacher of another tokenizer"):
        check_cross_tokenizer_teacher(
            teacher, tok, {"strategy": {"_target_": "lightning.pytorch.strategies.FSDPStrategy"}}
        )
    teacher.config.final_logit_softcapping = 0.5  # head(hidden) now differs from the forward's logits
    with pytest.raises(DistillabError, match="teacher: LlamaForCausalLM rescales its logits"):
        check_cross_tokenizer_teacher(teacher, tok, {"strategy": "auto"})
