"""Quality retained by the student, per task and metric: student / teacher.

For lower-is-better metrics (perplexity, NLL) the ratio is inverted (teacher / student) so that
1.0 always means "as good as the teacher" and smaller means worse.
"""

from __future__ import annotations

from dataclasses import dataclass

LOWER_IS_BETTER = ("ppl", "nll", "perplexity")


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


def lower_is_better(key: str) -> bool:
    return key.rsplit("/", 1)[-1].split("_")[0] in LOWER_IS_BETTER


def retention(teacher: float, student: float, lower_better: bool = False) -> float | None:
    num, den = (teacher, student) if lower_better else (student, teacher)
    return None if den == 0 else num / den


def retention_rows(
    teacher: dict[str, float], student: dict[str, float], before: dict[str, float] | None = None
) -> list[RetentionRow]:
    """One row per metric both models report (stderr and bookkeeping keys become columns, not rows).

    ``before``: the same student's metrics before training, shown next to the trained ones.
    """
    before = before or {}
    rows = []
    for key in sorted(set(teacher) & set(student)):
        if key.endswith("_stderr") or key.endswith("/tokens"):
            continue
        rows.append(
            RetentionRow(
                key,
                teacher[key],
                student[key],
                retention(teacher[key], student[key], lower_is_better(key)),
                teacher.get(f"{key}_stderr"),
                student.get(f"{key}_stderr"),
                before.get(key),
                retention(teacher[key], before[key], lower_is_better(key)) if key in before else None,
            )
        )
    return rows


def _fmt(value: float | None, stderr: float | None = None) -> str:
    if value is None:
        return "n/a"
    text = f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}"
    return f"{text} ± {stderr:.3f}" if stderr else text


def _pct(value: float | None) -> str:
    return "n/a (teacher 0)" if value is None else f"{100 * value:.1f}%"


def markdown_table(rows: list[RetentionRow]) -> str:
    """Teacher vs student per metric; with before/after columns when ``before`` values exist."""
    with_before = any(r.before is not None for r in rows)
    if with_before:
        head = (
            "| task/metric | teacher | student before | student after | retention before | retention after |"
        )
    else:
        head = "| task/metric | teacher | student | retention |"
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        cells = [r.key, _fmt(r.teacher, r.stderr_teacher)]
        if with_before:
            cells += [
                _fmt(r.before),
                _fmt(r.student, r.stderr_student),
                _pct(r.retention_before),
                _pct(r.retention),
            ]
        else:
            cells += [_fmt(r.student, r.stderr_student), _pct(r.retention)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
