"""Paired statistics over evaluation items: constructed cases whose answers are known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest

from distillab.evaluation import items, paired
from distillab.evaluation.retention import mean_retention, primary_metrics, retention_results, retention_rows


def _binary(n_correct: int, n: int) -> np.ndarray:
    return np.array([1.0] * n_correct + [0.0] * (n - n_correct))


def test_paired_difference_matches_the_normal_interval_of_the_item_differences():
    """B = A plus 100 extra correct items of 1000: d_i ∈ {0, 1}, mean 0.1, sd 0.3, so the 95%
    interval is 0.1 ± 1.96 · 0.3 / √1000 = [0.0814, 0.1186]; p far below 0.001."""
    n = 1000
    a = _binary(400, n)
    b = a.copy()
    b[400:500] = 1.0
    diff = paired.paired_difference({"acc": a}, {"acc": b}, paired.mean_of("acc"), iterations=4000)
    assert diff.a == pytest.approx(0.4) and diff.b == pytest.approx(0.5)
    assert diff.interval.value == pytest.approx(0.1)
    half = 1.96 * 0.3 / math.sqrt(n)
    assert diff.interval.low == pytest.approx(0.1 - half, abs=0.004)
    assert diff.interval.high == pytest.approx(0.1 + half, abs=0.004)
    assert diff.p_value <= 2 / 4000 and not diff.within_noise


def test_same_accuracy_on_other_items_is_within_noise():
    """B gets the same number right as A, on other items: the interval covers 0, p is large."""
    a = (np.random.default_rng(0).random(300) < 0.5).astype(float)
    diff = paired.paired_difference({"acc": a}, {"acc": a[::-1].copy()}, paired.mean_of("acc"))
    assert diff.interval.value == pytest.approx(0.0)
    assert diff.within_noise and diff.p_value > 0.5


def test_identical_models_retain_exactly_one_with_a_zero_width_interval():
    cols = {"acc": _binary(30, 100)}
    got = paired.retention_interval(cols, cols, paired.mean_of("acc"))
    assert (got.value, got.low, got.high) == (1.0, 1.0, 1.0)
    assert (
        paired.retention_interval({"acc": np.zeros(5)}, cols | {"acc": np.ones(5)}, paired.mean_of("acc"))
        is None
    )


def test_perplexity_retention_inverts_and_pools_tokens():
    """Retention of a perplexity is teacher / student, each exp(Σ nll / Σ tokens) over blocks."""
    teacher = {"nll_sum": np.array([300.0, 330.0]), "tokens": np.array([100.0, 110.0])}
    student = {"nll_sum": np.array([400.0, 420.0]), "tokens": np.array([100.0, 110.0])}
    got = paired.retention_interval(teacher, student, paired.perplexity_of(), lower_is_better=True)
    want = math.exp(630 / 210) / math.exp(820 / 210)
    assert got.value == pytest.approx(want)
    assert got.low <= want <= got.high


def test_seeds_of_one_arm_average_and_widen_nothing_when_identical():
    a = {"acc": _binary(40, 200)}
    b = {"acc": np.r_[_binary(40, 100), _binary(60, 100)]}
    one = paired.paired_difference(a, b, paired.mean_of("acc"))
    three = paired.paired_difference(a, [b, b, b], paired.mean_of("acc"))
    assert (three.interval.low, three.interval.high) == (one.interval.low, one.interval.high)
    spread = paired.paired_difference(a, [b, {"acc": _binary(40, 200)}], paired.mean_of("acc"))
    assert spread.b == pytest.approx((b["acc"].mean() + 0.2) / 2)  # the seeds' mean
    assert spread.interval.high - spread.interval.low > one.interval.high - one.interval.low


def test_mcnemar_exact_on_discordant_items():
    a, b = np.zeros(50), np.zeros(50)
    b[:10] = 1.0  # B alone right on 10 items, A alone on none: p = 2 / 2^10
    assert paired.mcnemar_p(a, b) == pytest.approx(2 / 1024)
    assert paired.mcnemar_p(a, a) == 1.0


def test_retention_rows_carry_intervals_only_where_items_reproduce_the_scores():
    ids = [f"doc{i}" for i in range(20)]
    teacher_items = {
        "arc": {"id": ids, "acc": [1.0, 1.0, 0.0, 1.0] * 5, "acc_norm": [1.0, 0.0, 1.0, 1.0] * 5},
        "wiki": items.perplexity_items([30.0, 36.0], [10, 12]),
    }
    student_items = {
        "arc": {"id": ids, "acc": [1.0, 0.0, 0.0, 1.0] * 5, "acc_norm": [1.0, 0.0, 0.0, 1.0] * 5},
        "wiki": items.perplexity_items([40.0, 44.0], [10, 12]),
    }
    teacher = {"arc/acc": 0.75, "arc/acc_norm": 0.75, "wiki/ppl": math.exp(66 / 22), "wiki/nll": 3.0}
    student = {"arc/acc": 0.5, "arc/acc_norm": 0.5, "wiki/ppl": math.exp(84 / 22), "wiki/nll": 84 / 22}
    primary = primary_metrics({"tasks": {"arc": {"primary": "acc_norm"}}, "perplexity": {"wiki": {}}})
    assert primary == {"arc": "acc_norm", "wiki": "ppl"}
    rows = {r.key: r for r in retention_rows(teacher, student, None, teacher_items, student_items, primary)}
    assert rows["arc/acc_norm"].primary and rows["wiki/ppl"].primary and not rows["arc/acc"].primary
    assert rows["arc/acc"].low is not None and rows["arc/acc"].items == 20
    # a reported value the items do not give back gets no interval rather than a wrong one
    off = retention_rows({**teacher, "arc/acc": 0.7}, student, None, teacher_items, student_items, primary)
    assert next(r for r in off if r.key == "arc/acc").low is None
    summary = retention_results(list(rows.values()))
    want = (0.5 / 0.75 + math.exp(66 / 22) / math.exp(84 / 22)) / 2  # each task once, primary only
    assert summary["retention_mean"]["value"] == pytest.approx(want)
    assert summary["primary"] == ["arc/acc_norm", "wiki/ppl"]
    assert mean_retention(list(rows.values())).low <= want
    # 4 items: the teacher scores 0 on 0.4% of draws, where the ratio is undefined; dropping those
    # draws would bias the interval, so there is none
    few = {"arc": {"id": ids[:4], "acc": [1.0, 1.0, 0.0, 1.0]}}
    few_student = {"arc": {"id": ids[:4], "acc": [1.0, 0.0, 0.0, 1.0]}}
    (row,) = retention_rows({"arc/acc": 0.75}, {"arc/acc": 0.5}, None, few, few_student, {"arc": "acc"})
    assert row.retention == pytest.approx(2 / 3) and row.low is None
    assert retention_results([row])["retention_mean"] == {
        "value": row.retention,
        "low": None,
        "high": None,
        "metrics": ["arc/acc"],
    }


def test_primary_metric_is_required_for_unknown_tasks():
    from distillab.errors import DistillabError

    with pytest.raises(DistillabError, match="eval.tasks.mmlu.primary: not set"):
        primary_metrics({"tasks": {"mmlu": {"limit": 5}}})


def test_items_round_trip_through_csv(tmp_path):
    suite = {
        "arc": {"id": ["a1", "b2"], "doc_id": [0, 1], "acc": [1.0, 0.0]},
        "wiki": items.perplexity_items([1.5], [7]),
    }
    items.write_suite(tmp_path / "items", suite)
    back = items.read_suite(tmp_path / "items")
    assert back["arc"] == {"id": ["a1", "b2"], "doc_id": [0.0, 1.0], "acc": [1.0, 0.0]}
    assert items.score(back["wiki"], "ppl") == pytest.approx(math.exp(1.5 / 7))


def test_retention_mean_difference_known_cases():
    """Two tasks against one teacher. (1) The teacher answers every item, so retention is the
    student's accuracy and B − A in retention/mean is half the accuracy gain on the one task that
    changed: 0.1 / 2 = 0.05, with the normal interval of that task's item differences halved.
    (2) Each side's point equals its own retention/mean. (3) B = A: exactly 0, within noise."""
    n = 1000
    a = _binary(400, n)
    b = a.copy()
    b[400:500] = 1.0
    teacher = {"acc": np.ones(n)}
    same = {"acc": _binary(700, n)}
    tasks = [
        paired.TaskArms(teacher, [{"acc": a}], [{"acc": b}], paired.mean_of("acc"), False, seed=1),
        paired.TaskArms(teacher, [same], [same], paired.mean_of("acc"), False, seed=2),
    ]
    diff = paired.retention_mean_difference(tasks, iterations=4000)
    assert diff.a == pytest.approx((0.4 + 0.7) / 2) and diff.b == pytest.approx((0.5 + 0.7) / 2)
    assert diff.interval.value == pytest.approx(0.05) and not diff.within_noise
    half = 1.96 * 0.3 / math.sqrt(n) / 2
    assert diff.interval.low == pytest.approx(0.05 - half, abs=0.003)
    assert diff.interval.high == pytest.approx(0.05 + half, abs=0.003)
    # Perplexity inverts: a student at twice the teacher's per-token NLL keeps exp(-1)/exp(-2)…
    ppl_teacher = {"nll_sum": np.full(50, 10.0), "tokens": np.full(50, 10.0)}  # ppl e
    ppl_a = {"nll_sum": np.full(50, 20.0), "tokens": np.full(50, 10.0)}  # ppl e², retention 1/e
    ppl = paired.TaskArms(ppl_teacher, [ppl_a], [ppl_teacher], paired.perplexity_of(), True, seed=3)
    inverted = paired.retention_mean_difference([ppl])
    assert inverted.a == pytest.approx(math.exp(-1)) and inverted.b == pytest.approx(1.0)
    unchanged = paired.retention_mean_difference([tasks[1]])
    assert unchanged.interval.value == unchanged.interval.low == unchanged.interval.high == 0.0
    assert unchanged.within_noise


def test_retention_mean_difference_draws_the_teacher_with_the_students():
    """A answers exactly as the teacher does, so on every draw A retains 1 and B − A is B's own
    retention − 1: the interval must be B's retention interval (same task seed) shifted by −1.
    Drawing the teacher apart from the students would break that equality."""
    rng = np.random.default_rng(0)
    teacher = {"acc": (rng.random(300) < 0.6).astype(float)}
    b = {"acc": np.where(rng.random(300) < 0.8, teacher["acc"], 1 - teacher["acc"])}
    task = paired.TaskArms(teacher, [teacher], [b], paired.mean_of("acc"), False, seed=7)
    diff = paired.retention_mean_difference([task])
    own = paired.retention_interval(teacher, b, paired.mean_of("acc"), seed=7)
    assert diff.a == 1.0 and diff.b == pytest.approx(own.value)
    assert diff.interval.low == pytest.approx(own.low - 1) and diff.interval.high == pytest.approx(
        own.high - 1
    )


def test_retention_mean_difference_refuses_a_teacher_that_scores_zero():
    zero = {"acc": np.zeros(20)}
    task = paired.TaskArms(zero, [zero], [zero], paired.mean_of("acc"), False, seed=1, name="gsm8k/acc")
    with pytest.raises(ValueError, match="gsm8k/acc"):
        paired.retention_mean_difference([task])
