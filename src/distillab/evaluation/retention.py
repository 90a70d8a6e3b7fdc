"""Quality retained by the student, per task and metric: student / teacher, with its interval.

For lower-is-better metrics (perplexity, NLL) the ratio is inverted (teacher / student) so that
1.0 always means "as good as the teacher" and smaller means worse.

Each task has one **primary** metric, named in its YAML (:mod:`distillab.evaluation.tasks`; an eval
config's ``eval.tasks.<task>.primary`` overrides it; ``ppl`` for a perplexity set). ``retention/mean`` — in results.json, the printed table, W&B, the
sweep metric and the report — is the mean over tasks of the primary metric's retention, each task
counted once. Where both models' per-item results are at hand, every retention carries a 95%
paired-bootstrap interval over the shared items (:mod:`distillab.evaluation.paired`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from distillab import markdown
from distillab.errors import DistillabError
from distillab.evaluation import items as item_results
from distillab.evaluation import paired, tasks

# Which way is better comes from the task registry (evaluation/lm_eval_tasks/); for a perplexity
# set's ppl, and for an lm-eval task distillab has no YAML for, from the metric's name: lower for
# perplexities, NLLs and bits, higher for everything else.
LOWER_IS_BETTER = ("ppl", "nll", "perplexity", "bpb")  # a metric named so, or ending in _nll


def primary_metrics(eval_cfg: Mapping[str, Any] | None) -> dict[str, str]:
    """``{task: metric}`` for every lm-eval task and perplexity set of an eval config."""
    if not eval_cfg:
        return {}
    primary = {}
    for task, settings in (eval_cfg.get("tasks") or {}).items():
        metric = (settings or {}).get("primary") or tasks.primary_metric(task)
        if metric is None:
            raise DistillabError(
                f"eval.tasks.{task}.primary: not set and the task has no YAML in {tasks.TASK_DIR} that names one; "
                "set it to the metric that task's retention means (e.g. acc, acc_norm, exact_match)"
            )
        known = tasks.metrics(task) if task in tasks.registry() else {}
        if known and metric not in known:
            raise DistillabError(
                f"eval.tasks.{task}.primary: {metric!r} is not a metric of {task}; valid: {', '.join(known)}"
            )
        primary[task] = metric
    for name in eval_cfg.get("perplexity") or {}:
        primary[name] = "ppl"
    return primary


@dataclass(frozen=True)
class RetentionRow:
    key: str  # "task/metric"
    teacher: float
    student: float
    retention: float | None  # None when undefined (teacher scored 0)
    stderr_teacher: float | None = None
    stderr_student: float | None = None
    before: float | None = None  # the student before training (e.g. cut, not yet healed)
    retention_before: float | None = None
    low: float | None = None  # 95% paired-bootstrap interval of ``retention`` over the shared items
    high: float | None = None
    primary: bool = False  # the task's primary metric: counted in retention/mean
    items: int | None = None  # how many items the interval is over
    replicates: Any = field(default=None, repr=False, compare=False)  # bootstrap draws (not saved)
    before_low: float | None = None  # 95% paired interval of ``retention_before`` (see with_before)
    before_high: float | None = None

    def saved(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "replicates"}


# lm-eval's corpus-level likelihood metrics (loglikelihood_rolling tasks), lower is better too
_LOWER_IS_BETTER_NAMES = ("word_perplexity", "byte_perplexity", "bits_per_byte")


def lower_is_better(key: str) -> bool:
    """``task/metric``: lower is better? The task's YAML says, else the metric's name."""
    task, _, metric = key.rpartition("/")
    higher = tasks.higher_is_better(task, metric)
    if higher is not None:
        return not higher
    return (
        metric.split("_")[0] in LOWER_IS_BETTER
        or metric.endswith("_nll")
        or metric.startswith(_LOWER_IS_BETTER_NAMES)
    )


def retention(teacher: float, student: float, lower_better: bool = False) -> float | None:
    num, den = (teacher, student) if lower_better else (student, teacher)
    return None if den == 0 else num / den


def retention_rows(
    teacher: dict[str, float],
    student: dict[str, float],
    before: dict[str, float] | None = None,
    teacher_items: item_results.SuiteItems | None = None,
    student_items: item_results.SuiteItems | None = None,
    primary: Mapping[str, str] | None = None,
    skip_tasks: frozenset[str] = frozenset(),
) -> list[RetentionRow]:
    """One row per metric both models report (stderr and bookkeeping keys become columns, not rows).

    ``before``: the same student's metrics before training, shown next to the trained ones.
    ``teacher_items``/``student_items``: per-item results; a metric gets an interval when both
    models scored the same items and the items reproduce both reported values.
    ``primary``: ``{task: metric}`` (:func:`primary_metrics`), marks the rows retention/mean uses.
    ``skip_tasks``: tasks with no retention, e.g. perplexity sets when teacher and student count
    tokens of different tokenizers (per-token values are not comparable).
    """
    before, primary = before or {}, primary or {}
    rows = []
    for key in sorted(set(teacher) & set(student)):
        if key.endswith("_stderr") or key.endswith("/tokens"):
            continue
        task, metric = key.split("/", 1)
        if task in skip_tasks:
            continue
        lower = lower_is_better(key)
        kept = retention(teacher[key], student[key], lower)
        low = high = n_items = replicates = None
        drawn = _replicates(task, metric, teacher[key], student[key], teacher_items, student_items)
        if drawn is not None and kept is not None:
            n_items, replicates = drawn
            bounds = paired.interval(kept, replicates)
            if bounds is None:  # the teacher scores 0 on too many draws: no honest interval
                replicates = None
            else:
                low, high = bounds.as_list()
        rows.append(
            RetentionRow(
                key,
                teacher[key],
                student[key],
                kept,
                teacher.get(f"{key}_stderr"),
                student.get(f"{key}_stderr"),
                before.get(key),
                retention(teacher[key], before[key], lower) if key in before else None,
                low,
                high,
                primary.get(task) == metric,
                n_items,
                replicates,
            )
        )
    return rows


def _replicates(task, metric, teacher_value, student_value, teacher_items, student_items):
    """``(items, bootstrap replicates of the retention)``, or None when no honest interval exists."""
    t_items, s_items = (teacher_items or {}).get(task), (student_items or {}).get(task)
    if not t_items or not s_items or not item_results.same_items(t_items, s_items):
        return None
    if not (
        item_results.reproduces(t_items, metric, teacher_value)
        and item_results.reproduces(s_items, metric, student_value)
    ):
        return None
    drawn = paired.retention_replicates(
        item_results.columns(t_items, metric),
        item_results.columns(s_items, metric),
        item_results.aggregate_for(metric),
        lower_is_better(f"{task}/{metric}"),
        seed=paired.seed_for(task),  # one draw of items per task, the same for each of its metrics
    )
    return None if drawn is None else (len(t_items["id"]), drawn[1])


def mean_retention(rows: list[RetentionRow]) -> paired.Interval | None:
    """retention/mean: the mean over tasks of the primary metric's retention (tasks where it is
    defined: not where the teacher scores 0), with its interval when every such task has one
    (tasks' items are drawn independently, so their replicates average). ``low``/``high`` are
    None without one."""
    chosen = [r for r in rows if r.primary and r.retention is not None]
    if not chosen:
        return None
    if all(r.replicates is not None for r in chosen):
        mean = paired.mean_interval([(r.retention, r.replicates) for r in chosen])
        if mean is not None:
            return mean
    return paired.Interval(float(np.mean([r.retention for r in chosen])), None, None)


def with_before(rows: list[RetentionRow], before_rows: list[RetentionRow]) -> list[RetentionRow]:
    """``rows`` with the intervals of ``before_rows`` (the un-trained student vs the same teacher,
    from :func:`retention_rows`) as their ``before_low``/``before_high``."""
    by_key = {r.key: r for r in before_rows}
    return [
        replace(r, before_low=by_key[r.key].low, before_high=by_key[r.key].high) if r.key in by_key else r
        for r in rows
    ]


def retention_results(rows: list[RetentionRow]) -> dict[str, Any]:
    """The retention keys every app writes to results.json."""
    mean = mean_retention(rows)
    return {
        "retention": {r.key: r.retention for r in rows},
        "retention_interval": {r.key: [r.low, r.high] for r in rows if r.low is not None},
        "primary": [r.key for r in rows if r.primary],
        "retention_mean": None
        if mean is None
        else {
            "value": mean.value,
            "low": mean.low,
            "high": mean.high,
            "metrics": [r.key for r in rows if r.primary and r.retention is not None],
        },
    }


def _fmt(value: float | None, stderr: float | None = None) -> str:
    if value is None:
        return "n/a"
    text = f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}"
    return f"{text} ± {stderr:.3f}" if stderr else text


def format_retention(value: float | None, low: float | None = None, high: float | None = None) -> str:
    """``61.2%`` or ``61.2% [55.0, 67.1]`` (the 95% interval, when there is one)."""
    if value is None:
        return "n/a (teacher 0)"
    if low is None or high is None:
        return f"{100 * value:.1f}%"
    return f"{100 * value:.1f}% [{100 * low:.1f}, {100 * high:.1f}]"


def format_cell(value: float | None, retention: float | None, interval=None) -> str:
    """A report cell: ``51.03 (58.8% [57.9, 59.8])``; the retention alone when there is no value (a
    mean), the value alone when there is no retention, ``n/a`` when neither."""
    if retention is None:
        return "n/a" if value is None else f"{value:.4g}"
    kept = format_retention(retention, *(interval or (None, None)))
    return kept if value is None else f"{value:.4g} ({kept})"


def markdown_table(rows: list[RetentionRow]) -> str:
    """Teacher vs student per metric; with before/after columns when ``before`` values exist."""
    has_before = any(r.before is not None for r in rows)
    after = ["student before", "student after", "retention before", "retention after"]
    head = ["task/metric", "teacher", *(after if has_before else ["student", "retention"])]
    cells = []
    for r in rows:
        row = [f"{r.key} ★" if r.primary else r.key, _fmt(r.teacher, r.stderr_teacher)]
        if has_before:
            row += [
                _fmt(r.before),
                _fmt(r.student, r.stderr_student),
                format_retention(r.retention_before, r.before_low, r.before_high),
            ]
        else:
            row += [_fmt(r.student, r.stderr_student)]
        cells.append(row + [format_retention(r.retention, r.low, r.high)])
    lines = [markdown.table(head, cells)]
    mean = mean_retention(rows)
    if mean is not None:
        tasks = ", ".join(r.key for r in rows if r.primary and r.retention is not None)
        lines += [
            "",
            f"retention/mean {format_retention(mean.value, mean.low, mean.high)} over the primary metrics: {tasks}",
        ]
    if any(r.low is not None for r in rows):
        lines += [
            "[low, high]: 95% paired-bootstrap interval over the items both models answered; ★ primary metric"
        ]
    return "\n".join(lines)
