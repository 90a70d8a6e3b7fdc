"""Paired statistics over evaluation items: intervals for retention and for differences between runs.

Teacher and student (or run A and run B) answer the *same* items, so their scores are correlated:
an item the teacher finds hard is usually hard for the student too. Two independent standard errors
ignore that and give intervals several times too wide for a difference or a ratio. Here every
bootstrap replicate draws one set of item indices and scores both sides on it (the paired
bootstrap), so the correlation is kept.

A task's score is an *aggregate* of per-item columns: the mean of ``acc`` for accuracy, and
``exp(Σ nll / Σ tokens)`` for a perplexity set (blocks are the items). With several seeds of one
arm, each replicate also draws seeds with replacement and averages the arm's aggregate over them,
so the interval carries seed-to-seed variation as well as item sampling.

Pure functions of numpy arrays; :mod:`distillab.evaluation.items` reads and writes the columns.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

Columns = Mapping[str, np.ndarray]  # column name -> per-item values, all of one length
Aggregate = Callable[[Columns, np.ndarray], np.ndarray]  # (columns, index rows (R, n)) -> (R,) scores

ITERATIONS = 2000  # bootstrap replicates: the 2.5/97.5% quantiles move by < 0.1 point at this count
LEVEL = 0.95
# Replicates where a ratio is undefined (the teacher scores 0 on the drawn items) cannot simply be
# dropped: they are the draws with the largest ratios, so dropping them biases the interval low.
# Above this share there is no interval at all.
MAX_UNDEFINED = 0.001


def mean_of(column: str) -> Aggregate:
    """The mean of one per-item column (accuracy, exact match, acc_norm)."""
    return lambda cols, idx: np.asarray(cols[column], dtype=float)[idx].mean(axis=-1)


def perplexity_of(nll: str = "nll_sum", tokens: str = "tokens") -> Aggregate:
    """``exp(Σ nll / Σ tokens)`` over the drawn blocks: a token-weighted perplexity."""

    def aggregate(cols, idx):
        return np.exp(
            np.asarray(cols[nll], float)[idx].sum(-1) / np.asarray(cols[tokens], float)[idx].sum(-1)
        )

    return aggregate


def nll_of(nll: str = "nll_sum", tokens: str = "tokens") -> Aggregate:
    """``Σ nll / Σ tokens``: mean per-token negative log-likelihood over the drawn blocks."""
    return lambda cols, idx: (
        np.asarray(cols[nll], float)[idx].sum(-1) / np.asarray(cols[tokens], float)[idx].sum(-1)
    )


@dataclass(frozen=True)
class Interval:
    value: float  # the statistic on the items as they are
    low: float
    high: float

    def as_list(self) -> list[float]:
        return [self.low, self.high]


@dataclass(frozen=True)
class Difference:
    a: float
    b: float
    interval: Interval  # of b − a
    p_value: float  # two-sided, H0: no difference
    n_items: int
    test: str

    @property
    def within_noise(self) -> bool:
        return self.interval.low <= 0.0 <= self.interval.high


def _draws(n_items: int, iterations: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, n_items, size=(iterations, n_items))


def _arm_scores(arm: Sequence[Columns], aggregate: Aggregate, idx: np.ndarray, rng) -> np.ndarray:
    """(R,) scores of one arm on the item draws ``idx``; with several seeds, seeds are drawn too."""
    if len(arm) == 1:
        return aggregate(arm[0], idx)
    per_seed = np.stack([aggregate(cols, idx) for cols in arm])  # (S, R)
    seeds = rng.integers(0, len(arm), size=(idx.shape[0], len(arm)))  # (R, S) seeds drawn per replicate
    return per_seed[seeds, np.arange(idx.shape[0])[:, None]].mean(axis=1)


def _point(arm: Sequence[Columns], aggregate: Aggregate, n_items: int) -> float:
    every = np.arange(n_items)[None, :]
    return float(np.mean([aggregate(cols, every)[0] for cols in arm]))


def _as_arm(columns: Columns | Sequence[Columns]) -> list[Columns]:
    return [columns] if isinstance(columns, Mapping) else list(columns)


def _length(arm: Sequence[Columns]) -> int:
    lengths = {len(next(iter(cols.values()))) for cols in arm}
    if len(lengths) != 1:
        raise ValueError(f"seeds of one arm have different item counts: {sorted(lengths)}")
    return lengths.pop()


def seed_for(name: str) -> int:
    """A fixed seed per task name: tasks get independent draws (their mean's interval assumes it)."""
    return zlib.crc32(name.encode())


def _quantiles(samples: np.ndarray, level: float) -> tuple[float, float] | None:
    finite = np.isfinite(samples)
    if np.mean(~finite) > MAX_UNDEFINED:
        return None
    samples = samples[finite]
    tail = (1.0 - level) / 2
    return float(np.quantile(samples, tail)), float(np.quantile(samples, 1 - tail))


def _scored_draws(first, second, aggregate, iterations, seed, names):
    """Both sides scored on the same ``iterations`` item draws, and on the items as they are:
    ``(first (R,), second (R,), first point, second point, items)``."""
    first, second = _as_arm(first), _as_arm(second)
    n = _length(first)
    if _length(second) != n:
        raise ValueError(f"{names[0]} has {n} items, {names[1]} {_length(second)}: not the same items")
    rng = np.random.default_rng(seed)
    idx = _draws(n, iterations, rng)
    scores = _arm_scores(first, aggregate, idx, rng), _arm_scores(second, aggregate, idx, rng)
    return *scores, _point(first, aggregate, n), _point(second, aggregate, n), n


def retention_replicates(
    teacher: Columns | Sequence[Columns],
    student: Columns | Sequence[Columns],
    aggregate: Aggregate,
    lower_is_better: bool = False,
    iterations: int = ITERATIONS,
    seed: int = 0,
) -> tuple[float, np.ndarray] | None:
    """Retention (student / teacher, or teacher / student when lower is better) on the items as
    they are, and its ``iterations`` paired-bootstrap replicates. None when the teacher scores 0."""
    t, s, t_point, s_point, _ = _scored_draws(
        teacher, student, aggregate, iterations, seed, ("teacher", "student")
    )
    if (s_point if lower_is_better else t_point) == 0:
        return None
    return _retained(t_point, s_point, lower_is_better), _retained(t, s, lower_is_better)


def _retained(teacher, student, lower_is_better: bool):
    """Retention: student / teacher, or teacher / student when lower is better (arrays or floats)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return teacher / student if lower_is_better else student / teacher


def interval(value: float, replicates: np.ndarray, level: float = LEVEL) -> Interval | None:
    """The percentile interval of bootstrap ``replicates`` around ``value``; None when too many
    replicates are undefined (see ``MAX_UNDEFINED``)."""
    bounds = _quantiles(replicates, level)
    return None if bounds is None else Interval(float(value), *bounds)


def retention_interval(
    teacher, student, aggregate, lower_is_better=False, iterations=ITERATIONS, seed=0, level=LEVEL
):
    """:func:`retention_replicates` as an :class:`Interval` (None when the teacher scores 0)."""
    out = retention_replicates(teacher, student, aggregate, lower_is_better, iterations, seed)
    return None if out is None else interval(*out, level)


def mean_interval(per_task: Sequence[tuple[float, np.ndarray]], level: float = LEVEL) -> Interval | None:
    """The mean over tasks of their retentions; tasks' items are drawn independently, so the
    replicates of the mean are the means of the tasks' replicates."""
    values = [v for v, _ in per_task]
    return interval(float(np.mean(values)), np.mean(np.stack([r for _, r in per_task]), axis=0), level)


def paired_difference(
    a: Columns | Sequence[Columns],
    b: Columns | Sequence[Columns],
    aggregate: Aggregate,
    iterations: int = ITERATIONS,
    seed: int = 0,
    level: float = LEVEL,
) -> Difference:
    """B − A on the same items: a paired-bootstrap interval and two-sided p-value.

    The p-value is the bootstrap's: twice the share of replicates on the far side of zero from the
    observed difference (floored at one replicate), so it is resolved to about 1 / ``iterations``.
    For one seed per arm of 0/1 items, :func:`mcnemar_p` is the exact alternative.
    """
    a_scores, b_scores, a_point, b_point, n = _scored_draws(
        a, b, aggregate, iterations, seed, ("run A", "run B")
    )
    return _difference(a_scores, b_scores, a_point, b_point, n, level)


def _difference(a_scores, b_scores, a_point, b_point, n_items, level) -> Difference:
    """B − A from paired replicates: percentile interval, two-sided bootstrap p (see above)."""
    diffs = b_scores - a_scores
    observed = b_point - a_point
    low, high = _quantiles(diffs, level) or (float("nan"), float("nan"))
    far = np.mean(diffs <= 0) if observed > 0 else np.mean(diffs >= 0) if observed < 0 else 0.5
    p = min(1.0, 2.0 * max(float(far), 1.0 / len(diffs)))
    return Difference(a_point, b_point, Interval(observed, low, high), p, n_items, "paired bootstrap")


@dataclass(frozen=True)
class TaskArms:
    """One task's per-item columns for a retention/mean comparison: the shared teacher, arm A's and
    arm B's seeds, how to score them, and the task's item-draw seed (:func:`seed_for`)."""

    teacher: Columns
    a: Sequence[Columns]
    b: Sequence[Columns]
    aggregate: Aggregate
    lower_is_better: bool
    seed: int
    name: str = ""


def retention_mean_difference(
    tasks: Sequence[TaskArms], iterations: int = ITERATIONS, level: float = LEVEL
) -> Difference:
    """B − A in retention/mean (the mean over tasks of each arm's retention against one teacher).

    Per task, teacher, A and B are scored on the same item draws (the task's seed, so with one seed
    per arm each side's replicates are exactly those behind its own retention/mean interval); the
    tasks' draws are independent, so the replicates of the mean are the means over tasks.
    Raises ValueError when a task has no retention (the teacher scores 0) or no interval (it scores
    0 on too many draws, see ``MAX_UNDEFINED``).
    """
    a_reps, b_reps, a_points, b_points, n_items = [], [], [], [], 0
    for task in tasks:
        n = _length([task.teacher])
        if _length(task.a) != n or _length(task.b) != n:
            raise ValueError(f"teacher has {n} items, an arm {_length(task.a)} / {_length(task.b)}")
        rng = np.random.default_rng(task.seed)
        idx = _draws(n, iterations, rng)
        t = _arm_scores([task.teacher], task.aggregate, idx, rng)
        t_point = _point([task.teacher], task.aggregate, n)
        if t_point == 0 or np.mean(t == 0) > MAX_UNDEFINED:
            raise ValueError(f"the teacher scores 0 on {task.name or 'a task'} (or on too many draws of it)")
        for arm, reps, points in ((task.a, a_reps, a_points), (task.b, b_reps, b_points)):
            reps.append(_retained(t, _arm_scores(arm, task.aggregate, idx, rng), task.lower_is_better))
            points.append(_retained(t_point, _point(arm, task.aggregate, n), task.lower_is_better))
        n_items += n
    a_mean, b_mean = np.mean(np.stack(a_reps), axis=0), np.mean(np.stack(b_reps), axis=0)
    return _difference(a_mean, b_mean, float(np.mean(a_points)), float(np.mean(b_points)), n_items, level)


def mcnemar_p(a_correct: np.ndarray, b_correct: np.ndarray) -> float:
    """Exact two-sided McNemar test on paired 0/1 outcomes: only the discordant items count."""
    a_correct, b_correct = np.asarray(a_correct) > 0.5, np.asarray(b_correct) > 0.5
    only_a, only_b = int(np.sum(a_correct & ~b_correct)), int(np.sum(b_correct & ~a_correct))
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)
