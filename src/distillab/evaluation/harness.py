"""Benchmarks through lm-evaluation-harness, in process, with lm-eval's own task definitions.

``run_tasks`` wraps an already-loaded model in lm-eval's ``HFLM`` and calls ``simple_evaluate``
once per task (each task has its own limit and few-shot count). Results come back flat:
``{"arc_challenge/acc_norm": 0.31, "arc_challenge/acc_norm_stderr": 0.04, ...}``.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from distillab.errors import DistillabError
from distillab.evaluation import items
from distillab.evaluation.items import SuiteItems
from distillab.evaluation.scored_logits import scored_logits_hflm
from distillab.evaluation.tasks import render
from distillab.precision import module_device_type

log = logging.getLogger(__name__)
# Our generated task files deliberately override lm-eval's (same names), and we deliberately pass a
# loaded model: those two warnings repeat for every task and say nothing the user must act on.
logging.getLogger("lm_eval.tasks._index").setLevel(logging.ERROR)
logging.getLogger("lm_eval.models.huggingface").setLevel(logging.ERROR)


def flatten_task_results(task: str, results: Mapping[str, Any]) -> dict[str, float]:
    """lm-eval's ``{"acc,none": .3, "acc_stderr,none": .01, "exact_match,strict-match": 0}`` ->
    ``{"task/acc": .3, "task/acc_stderr": .01, "task/exact_match_strict-match": 0}``."""
    flat = {}
    for key, value in results.items():
        if "," not in key or not isinstance(value, (int, float)):
            continue
        metric, filt = key.split(",", 1)
        name = metric if filt == "none" else f"{metric}_{filt}"
        if metric.endswith("_stderr"):
            base = metric[: -len("_stderr")]
            name = (base if filt == "none" else f"{base}_{filt}") + "_stderr"
        flat[f"{task}/{name}"] = float(value)
    return flat


def run_tasks(*args, **kwargs) -> dict[str, float]:
    """:func:`run_tasks_with_items` without the per-item results."""
    return run_tasks_with_items(*args, log_items=False, **kwargs)[0]


def ambient_autocast_dtype(model) -> torch.dtype | None:
    """The autocast dtype in force for ``model``'s device here, if any. lm-eval wraps every forward
    and ``generate`` in ``torch.autocast(enabled=mixed_precision_dtype is not None)``, which turns an
    outer autocast *off*: without handing it on, a bf16 run's lm-eval tasks computed in float32."""
    device = module_device_type(model) or "cpu"
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None


# lm-eval takes the float32 log-softmax of a whole batch's logits (batch x length x vocabulary): at
# Gemma-3's 262,144 tokens, 8 one-shot GSM8K items of ~700 tokens are 8 x 700 x 262,144 x 4 bytes
# = 5.9 GB, plus the bf16 logits: batch 8 OOM-killed Gemma's evaluation on a 24 GB machine.
# Batches shrink in proportion above this vocabulary, so that product stays where it is for a
# ~50k-vocabulary model; at or below it nothing changes.
REFERENCE_VOCABULARY = 65_536


def batch_size_for_vocabulary(batch_size: int, vocab_size: int) -> int:
    """The lm-eval batch size for a model of ``vocab_size`` tokens: ``batch_size`` up to
    :data:`REFERENCE_VOCABULARY`, then scaled down in proportion (at least 1). 8 -> 2 at 262,144."""
    if vocab_size <= REFERENCE_VOCABULARY:
        return batch_size
    return max(1, batch_size * REFERENCE_VOCABULARY // vocab_size)


@functools.cache
def _env_info() -> dict[str, Any]:
    from lm_eval.loggers.utils import add_env_info

    info: dict[str, Any] = {}
    add_env_info(info)
    return info


@contextlib.contextmanager
def env_info_collected_once() -> Iterator[None]:
    """lm-eval describes the environment (``torch.utils.collect_env``, which starts subprocesses)
    in every ``simple_evaluate`` call, i.e. once per task of every evaluation; it cannot change
    within a process, so inside here it is collected once and copied."""
    import lm_eval.evaluator as evaluator

    original = evaluator.add_env_info
    evaluator.add_env_info = lambda results: results.update(copy.deepcopy(_env_info()))
    try:
        yield
    finally:
        evaluator.add_env_info = original


def run_tasks_with_items(
    model,
    tokenizer,
    tasks: Mapping[str, Mapping[str, Any]],
    work_dir: Path,
    data_dir: Path | None,
    batch_size: int = 8,
    max_length: int | None = None,
    seed: int = 1234,
    log_items: bool = True,
    lm: Any = None,
) -> tuple[dict[str, float], SuiteItems]:
    """Evaluate ``model`` on ``tasks`` = ``{name: {limit, num_fewshot, max_gen_toks, primary}}``.

    With ``data_dir`` the tasks read local copies (see :mod:`distillab.evaluation.tasks`); with ``None`` lm-eval
    fetches its data from the hub as usual. Returns the flat metrics and, with ``log_items``, each
    task's per-item results from lm-eval's sample logging (:func:`items.from_samples`). ``lm``: an
    lm-eval model to score with instead of ``model`` in lm-eval's HFLM (llama.cpp's: ``model`` is None).
    """
    if not tasks:
        return {}, {}
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    include = render(list(tasks), data_dir, work_dir / "lm_eval_tasks")
    # with local data every task is a rendered YAML in ``include`` (lm-eval's own ones by an absolute
    # ``include:``), so lm-eval's ~14,000 task files need no indexing (the largest fixed cost of a profiled evaluation)
    manager = TaskManager(include_path=str(include) if include else None, include_defaults=data_dir is None)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise DistillabError(f"eval.tasks: unknown lm-eval task {unknown[0]!r}")
    was_training = model is not None and model.training
    if lm is None:
        lm = hf_lm(model, tokenizer, batch_size, max_length)
    metrics: dict[str, float] = {}
    per_task: SuiteItems = {}
    for name, settings in tasks.items():
        settings = dict(settings or {})
        gen_kwargs = {"max_gen_toks": int(settings["max_gen_toks"])} if settings.get("max_gen_toks") else None
        log.info("lm-eval %s %s", name, settings)
        with env_info_collected_once():
            out = simple_evaluate(
                model=lm,
                tasks=[name],
                num_fewshot=settings.get("num_fewshot"),
                limit=settings.get("limit"),
                task_manager=manager,
                gen_kwargs=gen_kwargs,
                log_samples=log_items,
                bootstrap_iters=1000,
                random_seed=seed,
                numpy_random_seed=seed,
                torch_random_seed=seed,
                fewshot_random_seed=seed,
            )
        metrics.update(flatten_task_results(name, out["results"][name]))
        if log_items:
            per_task[name] = items.from_samples((out.get("samples") or {}).get(name), name)
    if model is not None:
        model.train(was_training)
    return metrics, per_task


def hf_lm(model, tokenizer, batch_size: int, max_length: int | None):
    """lm-eval's HFLM over ``model`` (in eval mode), its batch fitted to the vocabulary."""
    vocab = model.get_output_embeddings().weight.shape[0]
    if (fitted := batch_size_for_vocabulary(batch_size, vocab)) != batch_size:
        log.info("lm-eval batch size %d -> %d for a %d-token vocabulary", batch_size, fitted, vocab)
        batch_size = fitted
    return scored_logits_hflm()(  # lm-eval's HFLM, its log-softmax only over the scored positions
        pretrained=model.eval(),
        tokenizer=tokenizer,
        batch_size=batch_size,
        max_length=max_length,
        mixed_precision_dtype=ambient_autocast_dtype(model),
        # log-softmax over the vocabulary in float32 whatever the logits' dtype (bf16 under autocast),
        # as everywhere else in distillab: bf16 log-probabilities keep ~3 significant digits
        softmax_dtype=torch.float32,
    )
