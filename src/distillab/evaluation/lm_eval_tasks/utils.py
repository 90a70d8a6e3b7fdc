"""Continuous per-item metrics for lm-eval tasks, plugged in through lm-eval's own YAML.

A 135M model is at chance on ARC-Challenge accuracy and scores 0 on GSM8K exact match, so
accuracy cannot tell a teacher from its compressed students there. The same items read
continuously can:

- ``choice_nll`` (ARC): −log of the probability the model puts on the correct choice *among the
  choices*, ``−log softmax(ll)[gold]`` over the per-choice log-likelihoods lm-eval already
  computes for accuracy (unnormalised, as ``acc`` uses them). Lower is better; chance is
  ``log(number of choices)`` (1.386 for four). The task also reports ``acc`` and ``acc_norm``,
  computed as lm-eval computes them, so one pass over the items serves all three.
- ``bpb`` (GSM8K): bits per UTF-8 byte of the reference solution (``" " + answer``, the
  continuation lm-eval scores) given the question and the usual few-shot context. Lower is better.
  Per byte, not per token, so teachers and students with different tokenizers compare.

Retention of both is teacher / student (lower is better), so 100% = as good as the teacher.

The task YAMLs beside this file name these functions (``process_results: !function utils.…``);
lm-eval loads ``!function`` files from the folder of the task YAML, so
:func:`distillab.evaluation.tasks.render` copies this file next to the YAMLs it writes. It must
import nothing from distillab.
"""

from __future__ import annotations

import math

import numpy as np


def arc_choice_results(doc: dict, results: list) -> dict[str, float]:
    """``(ll, is_greedy)`` per choice -> acc, acc_norm (as lm-eval) and choice_nll for one ARC item."""
    lls = np.array([float(r[0]) for r in results])
    choices = doc["choices"]["text"]
    gold = doc["choices"]["label"].index(doc["answerKey"])
    lengths = np.array([float(len(c)) for c in choices])
    log_norm = np.logaddexp.reduce(lls)
    return {
        "acc": float(np.argmax(lls) == gold),
        "acc_norm": float(np.argmax(lls / lengths) == gold),
        "choice_nll": float(log_norm - lls[gold]),
    }


def gsm8k_bpb_results(doc: dict, results: list) -> dict[str, float]:
    """``[(ll, is_greedy)]`` of the reference solution -> its bits per byte."""
    ll = float(results[0][0])
    n_bytes = len((" " + doc["answer"]).encode("utf-8"))
    return {"bpb": -ll / (n_bytes * math.log(2))}
