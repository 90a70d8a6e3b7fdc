"""Per-item evaluation results: one row per scored item, so two models can be compared item by item.

An lm-eval task's items are its documents: lm-eval's sample logging gives each document's
``doc_hash`` (a hash of the document itself: the stable item id) and its per-item metric values
(``acc``, ``acc_norm``, ``exact_match`` … as 0/1 or floats). A perplexity set's items are its
blocks: id ``block-<i>-<tokens>``, columns ``nll_sum`` (summed next-token NLL) and ``tokens``.

On disk: ``<run>/items/<model>/<task>.csv`` with a header row (``id`` first), one file per task and
model (``teacher``, ``student``, ``student_before``). CSV because every tool reads it, and one short
row per item keeps even whole splits (LAMBADA's 5,153 items) small.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import numbers
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from distillab.errors import DistillabError
from distillab.evaluation import paired
from distillab.files import write_text_atomic

log = logging.getLogger(__name__)

Items = dict[str, list]  # column -> values; "id" holds the item ids
SuiteItems = dict[str, Items]  # task or perplexity set -> its items

# lm-eval metrics whose task score is not the mean of the per-item values (corpus-level formulas).
_NOT_MEAN = ("perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte")


def from_samples(samples: list[Mapping] | None, task: str = "") -> Items:
    """lm-eval's logged samples of one task -> columns ``id``, ``doc_id`` and each per-item metric.

    A task with several filters (GSM8K: strict-match, flexible-extract) logs each document once
    per filter; its columns are named as :func:`harness.flatten_task_results` names the metrics
    (``exact_match_strict-match``), so a column and a reported metric share one key. Metrics whose
    per-item value is not one number (GLUE's f1/mcc pairs, BLEU's) get no column, and a task that
    logs nothing usable (a group task) gets no items: never an error after the evaluation ran.
    """
    if not samples:
        log.warning("lm-eval logged no per-item results for %s: its metrics get no interval", task)
        return {"id": []}
    try:
        return _from_samples(samples)
    except (KeyError, TypeError, ValueError) as err:
        log.warning("per-item results of %s unreadable (%s): its metrics get no interval", task, err)
        return {"id": []}


def _from_samples(samples: list[Mapping]) -> Items:
    by_filter: dict[str, list[Mapping]] = {}
    for sample in samples:
        by_filter.setdefault(sample.get("filter", "none"), []).append(sample)
    out: Items = {"id": []}
    for filt, group in by_filter.items():
        group = sorted(group, key=lambda s: s["doc_id"])
        ids = [s["doc_hash"][:16] for s in group]
        if not out["id"]:
            out["id"], out["doc_id"] = ids, [int(s["doc_id"]) for s in group]
        elif ids != out["id"]:  # lm-eval scores one document set per task; anything else is a bug
            raise ValueError(f"filter {filt!r} logged other documents than the first filter")
        for metric in group[0]["metrics"]:
            values = [s.get(metric) for s in group]
            if metric in _NOT_MEAN or not all(isinstance(v, numbers.Real) for v in values):
                continue
            out[metric if filt == "none" else f"{metric}_{filt}"] = [float(v) for v in values]
    return out


def perplexity_items(nll_sums: list[float], tokens: list[int]) -> Items:
    """Blocks as items; the id names the block's position and length, so runs with another
    ``block_size`` never pair block for block."""
    ids = [f"block-{i}-{n}" for i, n in enumerate(tokens)]
    return {"id": ids, "nll_sum": list(nll_sums), "tokens": list(tokens)}


def aggregate_for(metric: str) -> paired.Aggregate:
    """How a task's score is formed from its items: ``ppl``/``nll`` from the blocks, else a mean."""
    if metric == "ppl":
        return paired.perplexity_of()
    if metric == "nll":
        return paired.nll_of()
    return paired.mean_of(metric)


def columns(items: Items, metric: str) -> dict[str, np.ndarray] | None:
    """The numeric columns ``metric`` needs, or None when these items cannot form it."""
    need = ("nll_sum", "tokens") if metric in ("ppl", "nll") else (metric,)
    if not all(c in items for c in need) or not items.get("id"):
        return None
    return {c: np.asarray(items[c], dtype=float) for c in need}


def score(items: Items, metric: str) -> float | None:
    """The task score recomputed from its items (None when they cannot form it)."""
    cols = columns(items, metric)
    if cols is None:
        return None
    return float(aggregate_for(metric)(cols, np.arange(len(items["id"]))[None, :])[0])


def reproduces(items: Items, metric: str, reported: float) -> bool:
    """Whether the items give back the reported score: only then is an interval over them honest."""
    value = score(items, metric)
    return value is not None and math.isclose(value, reported, rel_tol=1e-6, abs_tol=1e-9)


def same_items(a: Items, b: Items) -> bool:
    return list(a.get("id", [])) == list(b.get("id", []))


def to_csv(items: Items) -> str:
    names = ["id", *[c for c in items if c != "id"]]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(names)
    writer.writerows(zip(*(items[c] for c in names), strict=True))
    return out.getvalue()


def from_csv(text: str) -> Items:
    """Items from :func:`to_csv`'s text; ``ValueError`` says how a damaged file differs from one."""
    if text and not text.endswith("\n"):  # to_csv ends every row with a newline: this one was cut
        raise ValueError("its last row is cut short (no final newline)")
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return {"id": []}
    names, body = rows[0], rows[1:]
    for number, row in enumerate(body, 2):
        if len(row) != len(names):
            raise ValueError(f"line {number} has {len(row)} fields for the {len(names)} columns {names}")
    items: Items = {name: [r[i] for r in body] for i, name in enumerate(names)}
    for name in names:
        if name != "id":
            try:
                items[name] = [float(v) for v in items[name]]
            except ValueError as err:
                raise ValueError(f"column {name!r}: {err}") from None
    return items


def write_suite(folder: Path, suite: SuiteItems) -> None:
    """``folder/<task>.csv`` for every task, each written atomically."""
    for task, items in suite.items():
        write_text_atomic(folder / f"{task}.csv", to_csv(items))


def read_suite(folder: Path) -> SuiteItems:
    """``{task: items}`` of a run's ``items/<model>/`` folder; a damaged file is a one-line error."""
    if not folder.is_dir():
        return {}
    suite = {}
    for path in sorted(folder.glob("*.csv")):
        try:
            suite[path.stem] = from_csv(path.read_text())
        except (ValueError, UnicodeDecodeError) as err:
            raise DistillabError(
                f"{path}: damaged per-item results ({err}); re-evaluate that model, or leave this run out"
            ) from None
    return suite
