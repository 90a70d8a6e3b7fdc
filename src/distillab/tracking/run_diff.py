"""Is run B better than run A? Paired differences over the items both runs' students answered.

Each side is one run or several seeds of one arm (run directories with ``results.json`` and
``items/student/``). ``RUN:teacher`` or ``RUN:student_before`` picks another model a run evaluated
(its teacher, its student before training), so one run answers "did healing move the cut model?". For every metric: A's and B's score, B − A with a 95% paired-bootstrap
interval and p-value (seeds drawn too, :mod:`distillab.evaluation.paired`), McNemar's exact p for
0/1 items of one seed per side, and a verdict that says "within noise" when the interval covers 0.
:mod:`distillab.report` is the command.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distillab import machine
from distillab.errors import DistillabError
from distillab.evaluation import items as item_results
from distillab.evaluation import paired
from distillab.evaluation.retention import lower_is_better
from distillab.files import read_json
from distillab.markdown import table
from distillab.versions import code_line, version_drift


@dataclass(frozen=True)
class MetricDiff:
    key: str
    diff: paired.Difference
    mcnemar_p: float | None
    lower_is_better: bool

    @property
    def verdict(self) -> str:
        if self.diff.within_noise:
            return "within noise"
        b_higher = self.diff.interval.value > 0
        return "B better" if b_higher != self.lower_is_better else "A better"


MODELS = ("student", "teacher", "student_before", "student_llama_cpp")  # the last: a GGUF scored in llama.cpp


def split_model(arg: Path) -> tuple[Path, str]:
    """``RUN`` or ``RUN:model`` -> (run directory, model)."""
    text = str(arg)
    head, sep, model = text.rpartition(":")
    if sep and model in MODELS:
        return Path(head), model
    return Path(text), "student"


def check_arm(runs: list[Path]) -> str | None:
    """Why these runs cannot form one arm (a model name that is not one, a run given twice), or None."""
    seen = set()
    for arg in runs:
        head, sep, model = str(arg).rpartition(":")
        if sep and "/" not in model and model not in MODELS:
            return f"{arg}: unknown model {model!r}; valid: {', '.join(MODELS)}"
        run = split_model(arg)
        if run in seen:
            return f"{arg} is given twice: seeds of one arm are different runs"
        seen.add(run)
    return None


def _items(run: Path, model: str) -> item_results.SuiteItems:
    suite = item_results.read_suite(run / "items" / model)
    if not suite:
        raise DistillabError(
            f"{run}: no per-item results for {model} (items/{model}/); re-run it with this version of distillab"
        )
    return suite


def results_of(run: Path) -> dict:
    """A finished run's results.json (missing or damaged: a one-line error naming it)."""
    path = run / "results.json"
    if not path.is_file():
        raise DistillabError(f"{run}: no results.json; give finished run directories")
    return read_json(path, "re-run that run, or leave it out of the report")


def default_metrics(run: Path) -> list[str]:
    """The run's primary metrics (one per task), as it recorded them."""
    primary = results_of(run).get("primary")
    if not primary:
        raise DistillabError(f"{run}: results.json lists no primary metrics; pass --metrics task/metric ...")
    return list(primary)


def _arms(a_runs: list[Path], b_runs: list[Path]) -> dict[str, list]:
    return {
        side: [((r, model), _items(r, model), results_of(r).get(model) or {}) for r, model in runs]
        for side, runs in (("A", a_runs), ("B", b_runs))
    }


def _columns(arms: dict[str, list], key: str, first: Path) -> dict[str, list]:
    """Per side, each run's per-item columns for ``key``, checked to reproduce the run's reported
    score and to cover the same items as ``first``."""
    task, _, metric = key.partition("/")
    columns: dict[str, list] = {side: [] for side in arms}
    reference_ids = None
    for side, runs in arms.items():
        for (run, model), suite, reported in runs:
            task_items = suite.get(task)
            cols = None if task_items is None else item_results.columns(task_items, metric)
            if cols is None:
                raise DistillabError(f"--metrics {key}: {run} has no per-item {metric!r} for {task!r}")
            if key in reported and not item_results.reproduces(task_items, metric, reported[key]):
                raise DistillabError(
                    f"{key}: {run}'s items/{model}/{task}.csv does not give back its results.json score "
                    f"{reported[key]:.6g}; the files do not belong together"
                )
            if reference_ids is None:
                reference_ids = task_items["id"]
            elif task_items["id"] != reference_ids:
                raise DistillabError(
                    f"{key}: {run} scored other items than {first} (task limit or data differ); "
                    "a paired comparison needs the same items"
                )
            columns[side].append(cols)
    return columns


def compare_runs(
    a_runs: list[Path], b_runs: list[Path], metrics: list[str] | None = None
) -> list[MetricDiff]:
    a_runs = [split_model(r) for r in a_runs]
    b_runs = [split_model(r) for r in b_runs]
    metrics = metrics or default_metrics(a_runs[0][0])
    arms = _arms(a_runs, b_runs)
    out = []
    for key in metrics:
        metric = key.partition("/")[2]
        columns = _columns(arms, key, a_runs[0][0])
        diff = paired.paired_difference(columns["A"], columns["B"], item_results.aggregate_for(metric))
        mcnemar = None
        if len(a_runs) == len(b_runs) == 1 and metric not in ("ppl", "nll"):
            a_col, b_col = columns["A"][0][metric], columns["B"][0][metric]
            if np.isin(a_col, (0.0, 1.0)).all() and np.isin(b_col, (0.0, 1.0)).all():
                mcnemar = paired.mcnemar_p(a_col, b_col)
        out.append(MetricDiff(key, diff, mcnemar, lower_is_better(key)))
    return out


MEAN_KEY = "retention/mean"


def compare_retention_mean(a_runs: list[Path], b_runs: list[Path]) -> MetricDiff | str:
    """B − A in retention/mean over the runs' primary metrics, against their shared teacher, with a
    paired interval (:func:`paired.retention_mean_difference`); or why it cannot be compared."""
    a_runs = [split_model(r) for r in a_runs]
    b_runs = [split_model(r) for r in b_runs]
    runs = [*a_runs, *b_runs]
    primary = [set(_mean_metrics(results_of(r), model)) for r, model in runs]
    if not primary[0] or any(p != primary[0] for p in primary):
        return "the runs' retention/mean averages different metrics (or none)"
    teachers = [results_of(r).get("teacher") or {} for r, _ in runs]
    keys = sorted(primary[0])
    if any(k not in t for t in teachers for k in keys):
        return "a run's results.json has no teacher score for a primary metric"
    if any(
        not np.allclose([t[k] for k in keys], [teachers[0][k] for k in keys], rtol=1e-9, atol=0)
        for t in teachers
    ):
        return "the runs' teachers score differently (their retentions divide by different models)"
    try:
        arms = _arms(a_runs, b_runs) | {"teacher": [(runs[0], _items(runs[0][0], "teacher"), teachers[0])]}
        columns = {key: _columns(arms, key, runs[0][0]) for key in keys}
    except DistillabError as err:
        return str(err)
    tasks = [
        paired.TaskArms(
            columns[key]["teacher"][0], columns[key]["A"], columns[key]["B"],
            item_results.aggregate_for(key.partition("/")[2]), lower_is_better(key),
            paired.seed_for(key.partition("/")[0]), key,
        )
        for key in keys
    ]  # fmt: skip
    try:
        diff = paired.retention_mean_difference(tasks)
    except ValueError as err:
        return str(err)
    if math.isnan(diff.interval.low):
        return "no interval: a task's retention is undefined on too many bootstrap draws"
    return MetricDiff(MEAN_KEY, diff, None, False)


def _mean_metrics(results: dict, model: str) -> list[str]:
    """The metrics ``model``'s retention/mean averages (tasks where the teacher scores 0 are left
    out), as the run recorded them; a run's teacher retains itself on its primary metrics."""
    record = results.get("before_training") if model == "student_before" else results
    mean = (record or {}).get("retention_mean") if model != "teacher" else None
    if isinstance(mean, dict) and mean.get("metrics"):
        return list(mean["metrics"])
    return list(results.get("primary") or ())


def markdown(
    diffs: list[MetricDiff], a_runs: list[Path], b_runs: list[Path], mean: MetricDiff | str | None = None
) -> str:
    """The comparison table; ``mean`` (:func:`compare_retention_mean`) adds retention/mean as its
    last row, or a line saying why it was not compared."""

    def names(runs):
        return ", ".join(str(r) for r in runs) + (f" ({len(runs)} seeds)" if len(runs) > 1 else "")

    records = {run: results_of(run) for run in (split_model(r)[0] for r in [*a_runs, *b_runs])}

    def said(describe, runs) -> str:
        return "; ".join(sorted({describe(records[split_model(r)[0]]) for r in runs} - {""}))

    lines = [
        f"A: {names(a_runs)}",
        f"B: {names(b_runs)}",
        *_per_side("computed on", said(_computed_on, a_runs), said(_computed_on, b_runs)),
        *_per_side("code", said(_code, a_runs), said(_code, b_runs)),
        *_version_notes(records),
        "",
    ]
    head = [
        "metric",
        "items",
        "A",
        "B",
        "B − A [95% interval]",
        "p (paired bootstrap)",
        "p (McNemar)",
        "verdict",
    ]
    rows = []
    for d in diffs:
        iv = d.diff.interval
        rows.append([
            d.key, d.diff.n_items, f"{d.diff.a:.4g}", f"{d.diff.b:.4g}",
            f"{iv.value:+.4g} [{iv.low:+.4g}, {iv.high:+.4g}]", _p(d.diff.p_value),
            "n/a" if d.mcnemar_p is None else f"{d.mcnemar_p:.3g}", d.verdict,
        ])  # fmt: skip
    if isinstance(mean, MetricDiff):
        diffs = [*diffs, mean]
        iv = mean.diff.interval
        rows.append([
            f"{MEAN_KEY} (primary metrics)", mean.diff.n_items, f"{100 * mean.diff.a:.1f}%",
            f"{100 * mean.diff.b:.1f}%", f"{100 * iv.value:+.2f} [{100 * iv.low:+.2f}, {100 * iv.high:+.2f}] points",
            _p(mean.diff.p_value), "n/a", mean.verdict,
        ])  # fmt: skip
    lines.append(table(head, rows))
    if isinstance(mean, str):
        lines += ["", f"{MEAN_KEY}: not compared: {mean}."]
    lines += ["", "One line per metric: " + "; ".join(f"{d.key}: {_one_line(d)}" for d in diffs)]
    return "\n".join(lines) + "\n"


def _per_side(label: str, a: str, b: str) -> list[str]:
    """Once when both sides share it, else per side (which run was bf16, or ran older code, is part
    of the answer); nothing for runs written before it was kept."""
    if a == b:
        return [f"{label}: {a}"] if a else []
    return [f"{side} {label}: {text}" for side, text in (("A", a), ("B", b)) if text]


def _code(results: dict) -> str:
    """The commit the run's code was at ('' for runs written before it was kept)."""
    return code_line(results["code"]) if "code" in results else ""


def _version_notes(records: dict[Path, dict]) -> list[str]:
    """A line per run whose library versions differ from the first run's: a difference between
    such runs may come from the libraries, not the recipe."""
    recorded = [(run, r["versions"]) for run, r in records.items() if r.get("versions")]
    notes = []
    for run, versions in recorded[1:]:
        drift = version_drift({"versions": recorded[0][1]}, versions)
        if drift:
            notes.append(f"library versions differ: {run} against {recorded[0][0]}: {', '.join(drift)}")
    return notes


def _computed_on(results: dict) -> str:
    """``float32 on <machine>`` from the run's results.json ('' for runs written before either was kept)."""
    name = (results.get("precision") or {}).get("name", "")
    where = machine.one_line(results.get("machine"))
    return f"{name} on {where}" if name and where else name


def _p(p: float) -> str:
    """The bootstrap p-value; at its floor (no replicate crossed zero) it is a bound, not a value."""
    floor = 2.0 / paired.ITERATIONS
    return f"≤ {floor:.3g}" if p <= floor * (1 + 1e-9) else f"{p:.3g}"


def _one_line(d: MetricDiff) -> str:
    iv = d.diff.interval
    if d.key == MEAN_KEY:  # in retention points, as in the table
        span = f"{100 * iv.value:+.2f} points, 95% [{100 * iv.low:+.2f}, {100 * iv.high:+.2f}]"
    else:
        span = f"{iv.value:+.4g}, 95% [{iv.low:+.4g}, {iv.high:+.4g}]"
    return f"{d.verdict} (B − A {span}, p {_p(d.diff.p_value)})"
