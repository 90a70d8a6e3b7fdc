"""The evaluation suite of an ``eval/`` config: lm-eval tasks + held-out perplexity, with a cache
for models that do not change between runs (the teacher). Every evaluation returns its metrics and
its per-item results (:mod:`distillab.evaluation.items`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lm_eval

from distillab.config import to_plain
from distillab.data.corpus import read_documents
from distillab.data.packing import bos_token_id
from distillab.data.paths import resolve_data_dir
from distillab.evaluation import items
from distillab.evaluation.harness import run_tasks_with_items
from distillab.evaluation.perplexity import block_nll, perplexity_from_blocks
from distillab.evaluation.tasks import derived_definition
from distillab.files import digest, write_json_atomic
from distillab.models.fingerprint import model_fingerprint
from distillab.precision import Precision, linear_weights_cast_once, module_device_type
from distillab.precision import current as current_precision

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    metrics: dict[str, float]  # {"task/metric": value}
    items: items.SuiteItems = field(default_factory=dict)  # {"task": per-item columns}


def evaluate_suite(
    model,
    tokenizer,
    eval_cfg: Mapping[str, Any],
    work_dir: Path,
    data_dir: str | None,
    precision: Precision | None = None,
) -> Evaluation:
    """Flat metrics ``{"task/metric": value}`` and per-item results for every task and perplexity
    set in ``eval_cfg``, computed in ``precision`` (default: the run's; bf16 = autocast, the
    weights stay as they are)."""
    device = module_device_type(model) or "cpu"
    with (precision or current_precision()).autocast(device), linear_weights_cast_once(model):
        return _evaluate_suite(model, tokenizer, to_plain(eval_cfg), work_dir, data_dir)


def _evaluate_suite(model, tokenizer, eval_cfg, work_dir, data_dir) -> Evaluation:
    use_local = eval_cfg.get("use_local_data", True)
    local_dir = resolve_data_dir(data_dir) if use_local else None
    metrics, per_item = run_tasks_with_items(
        model,
        tokenizer,
        eval_cfg.get("tasks") or {},
        work_dir,
        local_dir,
        batch_size=eval_cfg.get("batch_size", 8),
        max_length=eval_cfg.get("max_length"),
    )
    for name, ppl_cfg in (eval_cfg.get("perplexity") or {}).items():
        docs = read_perplexity_documents(name, ppl_cfg, data_dir)
        nll_sums, tokens = block_nll(
            model,
            tokenizer,
            docs,
            block_size=ppl_cfg.get("block_size", 512),
            max_tokens=ppl_cfg.get("max_tokens"),
            batch_size=eval_cfg.get("batch_size", 8),
        )
        add_perplexity(metrics, per_item, name, nll_sums, tokens)
    return Evaluation(metrics, per_item)


def add_perplexity(
    metrics: dict, per_item: dict, name: str, nll_sums: list[float], tokens: list[int]
) -> None:
    """The perplexity set ``name``'s metrics and per-block items, from its blocks' NLL sums."""
    metrics.update({f"{name}/{k}": v for k, v in perplexity_from_blocks(nll_sums, tokens).items()})
    per_item[name] = items.perplexity_items(nll_sums, tokens)


def read_perplexity_documents(name: str, ppl_cfg: Mapping[str, Any], data_dir) -> list[str]:
    """The documents of the perplexity set ``name`` (``eval.perplexity.<name>``)."""
    return read_documents(ppl_cfg["source"], resolve_data_dir(data_dir), f"eval.perplexity.{name}.source")


def perplexity_text_digests(eval_cfg, data_dir) -> dict[str, str]:
    """A digest of the documents each perplexity set reads (what its score is computed on)."""
    sets = to_plain(eval_cfg).get("perplexity") or {}
    root = resolve_data_dir(data_dir)
    return {
        name: digest("\x00".join(read_documents(spec["source"], root, f"eval.perplexity.{name}.source")), 16)
        for name, spec in sets.items()
    }


def cache_settings(eval_cfg, data_dir: str | None, precision: Precision, bos: bool) -> str:
    """What a cached score depends on besides the model's weights, as the text its key hashes.

    Every input that changes a score must change this text (``tests/test_evaluation.py`` pins
    limits, few-shot counts, block sizes, precision, BOS and distillab's own task code); keys added
    later are added only when they apply, so earlier entries keep their names.
    """
    settings = {
        "eval": to_plain(eval_cfg),
        "items": 1,  # entries written before per-item results were kept are not reused
        "data_dir": str(resolve_data_dir(data_dir)),
        "lm_eval": lm_eval.__version__,
        # the text each perplexity set is scored on: a change in how files are read (2026-11-30:
        # CRLF kept for some hours, then normalised again) must never reuse a score of other text
        "perplexity_text": perplexity_text_digests(eval_cfg, data_dir),
    }
    tasks = list(to_plain(eval_cfg).get("tasks") or {})
    if precision.is_bf16:
        # Since 2026-12-01 lm-eval's tasks really run under bf16 autocast, with a float32 log-softmax
        # (before, lm-eval's own autocast switched ours off and bf16 entries held float32 task
        # scores): those entries are not reused
        settings["precision"] = "bf16-lm-eval-softmax-f32" if tasks else precision.name
    if bos:  # scored with BOS since it was added (before: without)
        settings["bos"] = True
    derived = derived_definition(tasks)
    if derived is not None:  # distillab's own scoring code is part of what the score means
        settings["derived_tasks"] = digest(derived, 16)
    return json.dumps(settings, sort_keys=True, default=str)


def cached_evaluate_suite(
    model,
    tokenizer,
    eval_cfg,
    work_dir: Path,
    data_dir: str | None,
    cache_dir: Path | None,
    precision: Precision | None = None,
) -> tuple[Evaluation, bool]:
    """:func:`evaluate_suite`, memoised on disk by fingerprint of model + eval settings + lm-eval
    version + precision (a float32 teacher score never stands in for a bf16 one, or back).

    Returns ``(metrics, from_cache)``.
    """
    precision = precision or current_precision()
    if precision.setting == "auto":  # what this model's device really computes in
        precision = precision.on(module_device_type(model) or "cpu")
    if cache_dir is None:
        return evaluate_suite(model, tokenizer, eval_cfg, work_dir, data_dir, precision), False
    settings = cache_settings(eval_cfg, data_dir, precision, bos=bos_token_id(tokenizer) is not None)
    path = Path(cache_dir) / "eval" / f"{digest(f'{model_fingerprint(model)}{settings}', 24)}.json"
    if path.is_file():
        try:
            cached = json.loads(path.read_text())
            log.info("evaluation cache hit: %s", path)
            return Evaluation(cached["metrics"], cached.get("items", {})), True
        except (ValueError, KeyError, TypeError):  # damaged by hand or by a copy: a cache recomputes
            log.warning("evaluation cache entry %s is damaged: evaluating again", path)
    evaluation = evaluate_suite(model, tokenizer, eval_cfg, work_dir, data_dir, precision)
    payload = {"settings": json.loads(settings), "metrics": evaluation.metrics, "items": evaluation.items}
    write_json_atomic(path, payload, indent=None)
    return evaluation, False
