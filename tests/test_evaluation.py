"""lm-eval in process on local data, perplexity, retention and the teacher-result cache."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import SHARED_DATA

from distillab.evaluation import items
from distillab.evaluation.harness import batch_size_for_vocabulary, flatten_task_results
from distillab.evaluation.perplexity import block_nll, perplexity
from distillab.evaluation.retention import markdown_table, retention, retention_rows
from distillab.evaluation.suite import cached_evaluate_suite, evaluate_suite, model_fingerprint
from distillab.models.tiny import build_tiny
from distillab.precision import Precision

needs_data = pytest.mark.skipif(
    not (SHARED_DATA / "arc_challenge").is_dir(), reason="../shared/data not present"
)


@needs_data
def test_lm_eval_runs_local_arc_and_gsm8k_on_a_tiny_model(tmp_path):
    model, tok = build_tiny("llama")
    eval_cfg = {
        "batch_size": 4,
        "tasks": {
            "arc_challenge": {"limit": 3, "num_fewshot": 0},
            "gsm8k": {"limit": 2, "num_fewshot": 1, "max_gen_toks": 4},
        },
    }
    evaluation, hit = cached_evaluate_suite(
        model, tok, eval_cfg, tmp_path, str(SHARED_DATA), tmp_path / "cache"
    )
    metrics = evaluation.metrics
    assert not hit
    assert 0.0 <= metrics["arc_challenge/acc"] <= 1.0 and "arc_challenge/acc_norm_stderr" in metrics
    assert "gsm8k/exact_match_strict-match" in metrics
    # per-item results: stable ids, and they give back every score lm-eval reported (both GSM8K filters)
    arc, gsm = evaluation.items["arc_challenge"], evaluation.items["gsm8k"]
    assert len(arc["id"]) == 3 and len(set(arc["id"])) == 3 and len(gsm["id"]) == 2
    for task, metric in [
        ("arc_challenge", "acc"),
        ("arc_challenge", "acc_norm"),
        ("gsm8k", "exact_match_strict-match"),
        ("gsm8k", "exact_match_flexible-extract"),
    ]:
        assert items.reproduces(evaluation.items[task], metric, metrics[f"{task}/{metric}"]), (task, metric)
    # the generated task file points lm-eval's own definition at the local copy
    text = (tmp_path / "lm_eval_tasks" / "arc_challenge.yaml").read_text()
    assert "arc_challenge.yaml" in text and str(SHARED_DATA / "arc_challenge" / "test.jsonl") in text
    again, hit = cached_evaluate_suite(model, tok, eval_cfg, tmp_path, str(SHARED_DATA), tmp_path / "cache")
    assert hit and again.metrics == metrics and again.items == evaluation.items


def test_fingerprint_changes_with_any_weight():
    model, _ = build_tiny("llama")
    before = model_fingerprint(model)
    assert model_fingerprint(model) == before
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[0, 0] += 1e-3
    assert model_fingerprint(model) != before


def test_perplexity_matches_the_models_own_loss_on_the_same_blocks():
    model, tok = build_tiny("llama")
    text = ["the student learned from the teacher. " * 20]
    result = perplexity(model, tok, text, block_size=16, batch_size=2)
    # independent reference: transformers' own loss (labels=) on every 16-token block, token-weighted
    stream = torch.tensor(tok(text[0])["input_ids"] + [tok.eos_token_id])
    blocks = stream[: len(stream) // 16 * 16].reshape(-1, 16)
    with torch.no_grad():
        losses = [model(input_ids=b[None], labels=b[None]).loss.item() for b in blocks]
    assert result["tokens"] == 15 * len(blocks)
    assert result["nll"] == pytest.approx(sum(losses) / len(losses), rel=1e-5)
    assert result["ppl"] == pytest.approx(math.exp(sum(losses) / len(losses)), rel=1e-5)
    assert 1.0 < result["ppl"] < 2 * len(tok)  # a random model is near uniform over its vocabulary
    nll_sums, tokens = block_nll(model, tok, ["the student learned from the teacher. " * 20], block_size=16)
    assert sum(tokens) == result["tokens"] and len(nll_sums) == len(tokens)
    assert items.score(items.perplexity_items(nll_sums, tokens), "ppl") == pytest.approx(result["ppl"])


def test_lm_eval_batches_shrink_only_above_a_65k_vocabulary():
    assert batch_size_for_vocabulary(8, 49_152) == 8  # SmolLM2: as configured
    assert batch_size_for_vocabulary(8, 65_536) == 8
    assert batch_size_for_vocabulary(8, 262_144) == 2  # Gemma-3: batch x vocabulary as at 65k
    assert batch_size_for_vocabulary(2, 262_144) == 1  # never 0


def test_flatten_lm_eval_results():
    flat = flatten_task_results(
        "gsm8k",
        {
            "alias": "gsm8k",
            "exact_match,strict-match": 0.5,
            "exact_match_stderr,strict-match": 0.1,
            "acc,none": 0.3,
        },
    )
    assert flat == {
        "gsm8k/exact_match_strict-match": 0.5,
        "gsm8k/exact_match_strict-match_stderr": 0.1,
        "gsm8k/acc": 0.3,
    }


def test_retention_ratio_directions():
    assert retention(0.5, 0.45) == pytest.approx(0.9)
    assert retention(20.0, 25.0, lower_better=True) == pytest.approx(0.8)  # ppl went up: retention < 1
    assert retention(0.0, 0.0) is None
    rows = retention_rows({"a/acc": 0.5, "a/acc_stderr": 0.05, "w/ppl": 20.0}, {"a/acc": 0.4, "w/ppl": 40.0})
    assert [(r.key, r.retention) for r in rows] == [
        ("a/acc", pytest.approx(0.8)),
        ("w/ppl", pytest.approx(0.5)),
    ]
    assert "80.0%" in markdown_table(rows) and "0.5000 ± 0.050" in markdown_table(rows)
    with_before = retention_rows({"w/ppl": 20.0}, {"w/ppl": 40.0}, before={"w/ppl": 80.0})
    assert with_before[0].retention_before == pytest.approx(0.25)
    assert "| w/ppl | 20.0000 | 80.0000 | 40.0000 | 25.0% | 50.0% |" in markdown_table(with_before)


def _continuation_logprob(model, tok, context: str, continuation: str) -> float:
    """log p(continuation | context) with the model's own loss, encoded as lm-eval's HFLM does
    (the pair is tokenised whole; the context's tokens are a prefix)."""
    whole = tok(context + continuation, add_special_tokens=False)["input_ids"]
    n_ctx = len(tok(context, add_special_tokens=False)["input_ids"])
    ids = torch.tensor([whole])
    labels = ids.clone()
    labels[:, :n_ctx] = -100
    with torch.no_grad():
        loss = model(input_ids=ids, labels=labels).loss
    return -float(loss) * (len(whole) - n_ctx)


@needs_data
def test_continuous_gsm8k_and_arc_metrics_equal_independent_computations(tmp_path):
    """gsm8k_bpb: bits per byte of the reference solution from the model's own loss; arc_*_margin:
    choice_nll = logsumexp(ll) − ll[gold] over the per-choice log-likelihoods, acc / acc_norm as
    lm-eval's own ARC task scores them."""
    import json

    model, tok = build_tiny("llama", max_position_embeddings=1024)  # GSM8K items run to ~300 tokens
    eval_cfg = {
        "batch_size": 2,
        "tasks": {
            "gsm8k_bpb": {"limit": 2, "num_fewshot": 0},
            "arc_challenge_margin": {"limit": 3, "num_fewshot": 0},
            "arc_challenge": {"limit": 3, "num_fewshot": 0},
        },
    }
    evaluation, _ = cached_evaluate_suite(model, tok, eval_cfg, tmp_path, str(SHARED_DATA), None)
    docs = [json.loads(line) for line in (SHARED_DATA / "gsm8k" / "test.jsonl").read_text().splitlines()[:2]]
    bpb = []
    for doc in docs:
        ll = _continuation_logprob(model, tok, f"Question: {doc['question']}\nAnswer:", " " + doc["answer"])
        bpb.append(-ll / (len((" " + doc["answer"]).encode()) * math.log(2)))
    assert evaluation.items["gsm8k_bpb"]["bpb"] == pytest.approx(bpb, rel=1e-4)
    assert evaluation.metrics["gsm8k_bpb/bpb"] == pytest.approx(sum(bpb) / 2, rel=1e-4)

    arc = [
        json.loads(line)
        for line in (SHARED_DATA / "arc_challenge" / "test.jsonl").read_text().splitlines()[:3]
    ]
    want = []
    for doc in arc:
        lls = [
            _continuation_logprob(model, tok, f"Question: {doc['question']}\nAnswer:", " " + choice)
            for choice in doc["choices"]["text"]
        ]
        gold = doc["choices"]["label"].index(doc["answerKey"])
        want.append(math.log(sum(math.exp(x) for x in lls)) - lls[gold])
    margin = evaluation.items["arc_challenge_margin"]
    assert margin["choice_nll"] == pytest.approx(want, rel=1e-4)
    for metric in ("acc", "acc_norm"):  # the same items, the same accuracy as lm-eval's own task
        assert margin[metric] == evaluation.items["arc_challenge"][metric]
    assert items.reproduces(margin, "choice_nll", evaluation.metrics["arc_challenge_margin/choice_nll"])


def test_continuous_metrics_are_lower_is_better_and_have_primary_defaults():
    from distillab.evaluation.retention import lower_is_better, primary_metrics

    assert lower_is_better("gsm8k_bpb/bpb") and lower_is_better("arc_challenge_margin/choice_nll")
    assert not lower_is_better("arc_challenge_margin/acc_norm")
    assert lower_is_better("wikitext/word_perplexity") and lower_is_better("wikitext/bits_per_byte")
    tasks = {"gsm8k_bpb": {}, "arc_challenge_margin": {}}
    assert primary_metrics({"tasks": tasks}) == {"gsm8k_bpb": "bpb", "arc_challenge_margin": "choice_nll"}
    assert retention(2.0, 4.0, lower_is_better("gsm8k_bpb/bpb")) == 0.5  # twice the teacher's bits: 50%


def test_derived_tasks_get_a_yaml_on_the_hub_path_too(tmp_path):
    """Without local data lm-eval's own tasks need no file, distillab's variants still do."""
    from distillab.evaluation.tasks import FUNCTIONS_FILE, render

    assert render(["arc_easy"], None, tmp_path / "a") is None
    out = render(["arc_easy", "gsm8k_bpb"], None, tmp_path / "b")
    text = (out / "gsm8k_bpb.yaml").read_text()
    assert "process_results: !function 'utils.gsm8k_bpb_results'" in text  # a tag, not a plain string
    assert "dataset_kwargs" not in text and (out / FUNCTIONS_FILE).is_file()
    assert "tag: null" in text  # not in lm-eval's math_word_problems group
    assert "dataset_kwargs" not in (out / "gsm8k.yaml").read_text()  # its base: lm-eval's own, hub data
    assert not (out / "arc_easy.yaml").exists()


@needs_data
def test_gsm8k_bpb_prompts_read_answer_colon_space_solution_in_shots_and_target(tmp_path):
    """The few-shot examples and the scored continuation both read "Answer: <solution>" (one space):
    a loglikelihood request takes doc_to_target as it is, shots add target_delimiter."""
    import re

    from lm_eval.tasks import TaskManager

    from distillab.evaluation.tasks import render

    out = render(["gsm8k_bpb"], SHARED_DATA, tmp_path)
    task = TaskManager(include_path=str(out)).load_task_or_group(["gsm8k_bpb"])["gsm8k_bpb"]
    task.set_config(key="num_fewshot", value=1)
    task.build_all_requests(limit=1, rank=0, world_size=1)
    context, continuation = task.instances[0].arguments
    shot, question = context.split("\n\n")
    assert re.match(r"Question: .+\nAnswer: \S", shot, re.S) and "Answer:  " not in shot
    assert question.startswith("Question: ") and question.endswith("\nAnswer:")
    assert continuation.startswith(" ") and not continuation.startswith("  ") and "####" in continuation


@needs_data
def test_lm_eval_computes_in_the_run_precision(tmp_path, monkeypatch):
    """lm-eval's HFLM wraps each forward in its own autocast, which switched an outer bf16 autocast
    off: a bf16 run's tasks computed in float32. The precision must reach the model's forward."""
    model, tok = build_tiny("llama")
    seen, softmax_dtypes = [], []
    model.register_forward_hook(lambda *_: seen.append(torch.is_autocast_enabled("cpu")))
    log_softmax = torch.nn.functional.log_softmax

    def recording_log_softmax(*args, **kwargs):
        out = log_softmax(*args, **kwargs)
        softmax_dtypes.append(out.dtype)
        return out

    monkeypatch.setattr(torch.nn.functional, "log_softmax", recording_log_softmax)
    eval_cfg = {"batch_size": 4, "tasks": {"arc_easy": {"limit": 2, "num_fewshot": 0}}}
    bf16 = Precision("bf16", "cpu", "test", "bf16")
    evaluate_suite(model, tok, eval_cfg, tmp_path, str(SHARED_DATA), bf16)
    assert seen and all(seen)
    # ... while the log-softmax over the vocabulary stays float32, as everywhere in distillab
    assert softmax_dtypes and set(softmax_dtypes) == {torch.float32}
    seen.clear()
    evaluate_suite(
        model, tok, eval_cfg, tmp_path, str(SHARED_DATA), Precision("float32", "cpu", "test", "float32")
    )
    assert seen and not any(seen)


def _settings(**change):
    from omegaconf import OmegaConf

    from distillab.evaluation.suite import cache_settings

    cfg = {
        "batch_size": 8,
        "tasks": {"arc_challenge_margin": {"limit": 10, "num_fewshot": 0, "primary": "choice_nll"}},
        "perplexity": {
            "wikitext2": {"source": {"format": "text", "files": "wikitext2/wiki.test.raw"}, "block_size": 64}
        },
    }
    cfg = OmegaConf.create(cfg)
    for key, value in change.get("cfg", {}).items():
        OmegaConf.update(cfg, key, value)
    precision = change.get("precision", Precision("float32"))
    return cache_settings(cfg, str(SHARED_DATA), precision, bos=change.get("bos", False))


def test_the_evaluation_cache_key_changes_with_everything_a_score_depends_on(monkeypatch):
    """A cached teacher score stands in only for the same computation: every input that changes a
    score changes the text its key hashes (same inputs: the same text)."""
    from distillab.evaluation import suite

    base = _settings()
    assert _settings() == base
    changed = {
        "limit": _settings(cfg={"tasks.arc_challenge_margin.limit": 11}),
        "few-shot": _settings(cfg={"tasks.arc_challenge_margin.num_fewshot": 1}),
        "block size": _settings(cfg={"perplexity.wikitext2.block_size": 128}),
        "scored tokens": _settings(cfg={"perplexity.wikitext2.max_tokens": 128}),
        "precision": _settings(precision=Precision("bf16")),
        "BOS": _settings(bos=True),
    }
    monkeypatch.setattr(suite, "derived_definition", lambda tasks: "scoring code, edited")
    changed["task code"] = _settings()
    for what, settings in changed.items():
        assert settings != base, f"the cache key ignores a change of {what}"
    assert len(set(changed.values())) == len(changed)


def test_the_teacher_cache_key_changes_with_k_temperature_precision_tokenizer_and_blocks():
    from distillab.data.teacher_cache import cache_key

    blocks = torch.arange(12).reshape(2, 6)
    base = cache_key("teacher", "tok", blocks, 8, 2.0)
    assert cache_key("teacher", "tok", blocks.clone(), 8, 2.0) == base
    variants = {
        "k": cache_key("teacher", "tok", blocks, 16, 2.0),
        "temperature": cache_key("teacher", "tok", blocks, 8, 1.0),
        "precision (the teacher id carries its cache tag)": cache_key("teacher:bf16", "tok", blocks, 8, 2.0),
        "tokenizer": cache_key("teacher", "tok2", blocks, 8, 2.0),
        "BOS (another first token)": cache_key(
            "teacher", "tok", torch.cat([blocks[:, :1] * 0 + 99, blocks[:, 1:]], 1), 8, 2.0
        ),
        "block size": cache_key("teacher", "tok", blocks.reshape(3, 4), 8, 2.0),
    }
    for what, key in variants.items():
        assert key != base, f"the teacher cache key ignores a change of {what}"


def test_a_damaged_evaluation_cache_entry_is_evaluated_again(tmp_path):
    from omegaconf import OmegaConf

    model, tok = build_tiny("llama", seed=0)
    eval_cfg = OmegaConf.create(
        {
            "batch_size": 2,
            "tasks": {},
            "perplexity": {
                "wikitext2": {
                    "source": {"format": "text", "files": "wikitext2/wiki.test.raw"},
                    "block_size": 32,
                    "max_tokens": 64,
                }
            },
        }
    )
    first, hit = cached_evaluate_suite(model, tok, eval_cfg, tmp_path, str(SHARED_DATA), tmp_path / "cache")
    assert not hit
    (entry,) = (tmp_path / "cache" / "eval").glob("*.json")
    entry.write_text(entry.read_text()[:20])
    again, hit = cached_evaluate_suite(model, tok, eval_cfg, tmp_path, str(SHARED_DATA), tmp_path / "cache")
    assert not hit and again.metrics == first.metrics
    assert cached_evaluate_suite(model, tok, eval_cfg, tmp_path, str(SHARED_DATA), tmp_path / "cache")[1]


def test_the_log_softmax_over_scored_positions_gives_lm_evals_scores_bit_for_bit():
    """harness's HFLM takes the log-softmax only where a request is scored; lm-eval's takes it over
    every position of the batch. Both score the same requests, in float32 and under bf16 autocast."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from distillab.evaluation.scored_logits import DeferredLogSoftmax, scored_logits_hflm

    model, tok = build_tiny("llama")
    pairs = [("The cat sat on the", " mat"), ("Two plus two is", " four, not five"), ("A", " b c d e f g")]
    requests = [
        Instance(request_type="loglikelihood", doc={}, arguments=pair, idx=i) for i, pair in enumerate(pairs)
    ]
    for dtype in (None, torch.bfloat16):
        scores = []
        for cls in (HFLM, scored_logits_hflm()):
            lm = cls(pretrained=model.eval(), tokenizer=tok, batch_size=2, mixed_precision_dtype=dtype,
                     softmax_dtype=torch.float32)  # fmt: skip
            scores.append(lm.loglikelihood(requests, disable_tqdm=True))
        assert scores[1] == scores[0], dtype  # (log-likelihood, is_greedy) per request, exactly
        assert isinstance(lm._model_call(torch.ones(1, 3, dtype=torch.long)), DeferredLogSoftmax)
    pending = torch.log_softmax(torch.randn(2, 3, 5).as_subclass(DeferredLogSoftmax), dim=-1)
    with pytest.raises(NotImplementedError, match="only a log-softmax over the vocabulary"):
        torch.log_softmax(pending, dim=0)
