"""Compare compressed models across runs: size x quality entries, the Pareto front, budget advice.

An *entry* is one model: a distill / prune / quantize run (``results.json``) or one stage of a
pipeline (``pipeline.json``). Pure functions here; :mod:`distillab.report` is the command.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from distillab import markdown
from distillab.errors import DistillabError
from distillab.evaluation.footprint import bytes_on_disk
from distillab.evaluation.retention import format_cell
from distillab.files import read_json
from distillab.tracking import run_diff
from distillab.tracking.runs import find_runs, run_labels


@dataclass
class Entry:
    label: str
    params: int | None
    bytes: int | None
    metrics: dict[str, float] = field(default_factory=dict)
    retention: dict[str, float | None] = field(default_factory=dict)
    reference: dict[str, float] = field(default_factory=dict)  # what retention divides by (teacher / input)
    primary: list[str] = field(default_factory=list)  # the run's primary metrics (one per task)
    interval: dict[str, list[float]] = field(default_factory=dict)  # 95% interval of each retention
    # retention/mean as the run recorded it (evaluation/retention.mean_retention: over its primary
    # metrics) with its interval; the one meaning of "mean retention" in every table and plot
    mean: float | None = None
    mean_interval: list[float | None] | None = None
    tokens: int | None = None  # train_tokens of a training run (a budget curve's x axis)
    recipe: str | None = None  # how it trained (device, precision, batch): curves never join two
    # where its per-item results are, for paired tests: the run directory, or ``RUN:model`` (a
    # pipeline stage's folder, a GGUF scored in llama.cpp); None when unknown
    run: Path | None = None
    cost: dict | None = None  # the run's cost ledger (cost.py): FLOPs, wall seconds by phase, device
    scored_in: str = "torch"  # the runtime its metrics come from: torch | llama.cpp (the GGUF file itself)


def cost_of(entry: Entry, axis: str) -> float | None:
    """What making the model cost on ``axis``: ``flops`` (counted training FLOPs) or ``seconds``
    (wall seconds of everything but evaluation: training, scoring, cutting, fitting, export)."""
    ledger = entry.cost or {}
    if axis == "flops":
        return (ledger.get("flops") or {}).get("total")
    wall = ledger.get("wall_seconds") or {}
    return None if not wall else wall.get("train", 0.0) + wall.get("other", 0.0)


def check_one_machine(entries: list[Entry]) -> None:
    """Wall seconds compare only on one machine (2-core CPUs here differ 3x in matmul speed): a
    seconds axis over runs timed on different devices is refused, naming them."""
    devices = Counter(
        e.cost.get("device") or "unknown device" for e in entries if e.cost and e.cost.get("wall_seconds")
    )
    if len(devices) > 1:
        seen = "; ".join(f"{d}: {n} run{'s' * (n > 1)}" for d, n in devices.items())
        raise DistillabError(
            f"--cost-axis seconds: the runs were timed on {len(devices)} machines ({seen}); wall hours of "
            "different machines do not share an axis: plot each machine's runs separately, or use --cost-axis flops"
        )


def _recorded_mean(record: dict) -> tuple[float | None, list[float | None] | None]:
    mean = record.get("retention_mean")
    if isinstance(mean, dict):  # results.json
        return mean.get("value"), [mean.get("low"), mean.get("high")]
    return record.get("mean_retention"), record.get("mean_retention_interval")  # a pipeline.json row


def _run_bytes(results: dict) -> int | None:
    if isinstance(results.get("bytes"), dict):
        return results["bytes"].get("student")
    folder = results.get("student_dir")
    return bytes_on_disk(folder) if folder and Path(folder).is_dir() else None


def collect(paths: list[Path]) -> list[Entry]:
    """Entries from run directories, sweep directories and pipeline directories, in the order given."""
    entries: list[Entry] = []
    seen_stage_outputs: set[str] = set()  # a stage shared by two pipelines (reuse_stages_from) is one model
    # Label runs by what tells them apart across every path given, not within one path only.
    runs_of = {p: find_runs([p]) for p in paths if not (p / "pipeline.json").is_file()}
    every_run = [run for runs in runs_of.values() for run in runs]
    labels = dict(zip(every_run, run_labels(every_run), strict=True)) if every_run else {}
    for path in paths:
        if (path / "pipeline.json").is_file():
            rows = read_json(path / "pipeline.json", "re-run the pipeline (finished stages are reused)")
            teacher = next((r["metrics"] for r in rows if r["stage"] == "teacher"), {})
            for row in rows:
                # one model once; the same file scored in llama.cpp is another row (its own runtime)
                output = json.dumps([row.get("output"), row.get("scored_in")], sort_keys=True)
                if row.get("output") is not None and output in seen_stage_outputs:
                    continue
                seen_stage_outputs.add(output)
                entries.append(
                    Entry(
                        f"{path.name}/{row['stage']}",
                        row["params"],
                        row["bytes"],
                        row["metrics"],
                        row["retention"],
                        teacher,
                        row.get("primary") or [],
                        row.get("retention_interval") or {},
                        *_recorded_mean(row),
                        cost=row.get("cost"),
                        scored_in=row.get("scored_in", "torch"),
                        run=Path(row["run"]) if row.get("run") else None,  # for paired tests
                    )
                )
            continue
        runs = runs_of[path]
        for run in runs:
            label = labels[run]
            results = run_diff.results_of(run)
            params = results.get("params")
            entries.append(
                Entry(
                    _label(label, run, results, sweep=len(runs) > 1),
                    params.get("student") if isinstance(params, dict) else params,
                    _run_bytes(results),
                    results.get("student", {}),
                    results.get("retention", {}),
                    results.get("teacher", {}),
                    results.get("primary") or [],
                    results.get("retention_interval") or {},
                    *_recorded_mean(results),
                    results.get("train_tokens"),
                    _recipe(run, results),
                    run,
                    results.get("cost"),
                )
            )
            if results.get("before_training"):  # the same student before training: a budget curve's 0
                entries.append(_before_training(entries[-1], results))
            if results.get("student_llama_cpp") and results.get("llama_cpp"):  # the file, in llama.cpp
                entries.append(_in_llama_cpp(entries[-1], results))
    return entries


def _in_llama_cpp(torch_entry: Entry, results: dict) -> Entry:
    """The same GGUF file scored in llama.cpp (``quantize.score_in_llama_cpp``), as its own entry."""
    scored = results["llama_cpp"]
    return dataclasses.replace(
        torch_entry,
        label=f"{torch_entry.label} (llama.cpp)",
        metrics=results["student_llama_cpp"],
        retention=scored.get("retention") or {},
        interval=scored.get("retention_interval") or {},
        mean=_recorded_mean(scored)[0],
        mean_interval=_recorded_mean(scored)[1],
        scored_in="llama.cpp",
        # paired tests read the file's llama.cpp per-item results, not the torch ones beside them
        run=Path(f"{torch_entry.run}:student_llama_cpp") if torch_entry.run else None,
    )


def _before_training(trained: Entry, results: dict) -> Entry:
    """The un-trained student a run evaluated (``eval_before_training=true``), as its own entry at 0 tokens."""
    before = results["before_training"]
    return Entry(
        f"{trained.label} (before training)",
        trained.params,
        None,  # never exported: no bytes on disk
        results.get("student_before", {}),
        before.get("retention", {}),
        trained.reference,
        before.get("primary") or [],
        before.get("retention_interval") or {},
        *_recorded_mean(before),
        0,
        trained.recipe,  # the start of the trained run's curve
    )


TRAIN_NAMES = {"32-true": "float32", "32": "float32"}  # Lightning's float32 names, as people say them


def _recipe(run: Path, results: dict) -> str | None:
    """``cpu float32 batch 4×256``: where and how a training run trained (its training precision,
    the batch per step with devices and accumulation), from its results.json and Hydra's saved
    config; None for runs that did not train."""
    if results.get("train_tokens") is None:
        return None
    precision = results.get("precision") or {}
    train = TRAIN_NAMES.get(precision.get("train"), precision.get("train")) or precision.get("name")
    parts = [precision.get("device_type"), train]
    config = run / ".hydra" / "config.yaml"
    if config.is_file():
        saved = OmegaConf.load(config)
        data, trainer = saved.get("data") or {}, saved.get("trainer") or {}
        if data.get("batch_size") is not None:
            parts.append(f"batch {data.get('batch_size')}×{data.get('block_size')}")
        if (trainer.get("accumulate_grad_batches") or 1) > 1:
            parts.append(f"accumulate {trainer.get('accumulate_grad_batches')}")
    if (results.get("world_size") or 1) > 1:
        parts.append(f"× {results['world_size']} devices")
    return " ".join(str(p) for p in parts if p) or None


def default_metrics(entries: list[Entry]) -> list[str]:
    """The primary metrics the runs recorded (in the first run's order, those every run has);
    for results written before primary metrics existed, WikiText-2 perplexity and ARC-Challenge."""
    recorded = [e.primary for e in entries if e.primary]
    if not recorded:
        return ["wikitext2/ppl", "arc_challenge/acc_norm"]
    return [m for m in recorded[0] if all(m in r for r in recorded)]


def _label(label: str, run: Path, results: dict, sweep: bool) -> str:
    """``<experiment>/<overrides>``: a sweep job's folder is only a number, so its experiment name
    comes from results.json (two sweeps over the same key stay apart in one report)."""
    if not sweep:
        return f"{run.parent.name}/{label}"
    return f"{results['experiment']}/{label}" if results.get("experiment") else label


# Sizes closer than this (relative) count as equal on the front: a model 128 bytes smaller because
# its GGUF lacks one metadata key is not a choice anyone makes, and would get a "66 MB to 66 MB" band.
SAME_SIZE = 0.005


def pareto_front(
    entries: list[Entry],
    same_size: float = SAME_SIZE,
    size: Callable[[Entry], float | None] = lambda e: e.bytes,
) -> list[Entry]:
    """Entries no other entry beats on both size (smaller) and retention/mean (higher), smallest first.
    ``size``: bytes on disk, or another cost (``cost_of``: the front of recipes by compute).

    A model within ``same_size`` (relative) of a better one is dominated by it.
    """
    scored = [e for e in entries if size(e) is not None and e.mean is not None]
    scored.sort(key=lambda e: (size(e), -e.mean))
    front, best = [], float("-inf")
    for entry in scored:
        quality = entry.mean
        if quality > best:
            front.append(entry)
            best = quality
    return [
        e
        for i, e in enumerate(front)
        if i + 1 == len(front) or size(front[i + 1]) > size(e) * (1 + same_size)
    ]


def _overlap(a: list | None, b: list | None) -> bool:
    return bool(a and b and None not in a and None not in b and a[0] <= b[1] and b[0] <= a[1])


def paired_tie(a: Path, b: Path) -> bool | None:
    """Whether run B's retention/mean is within noise of run A's (paired, over the same items);
    None when the runs cannot be compared that way (no per-item results, another teacher)."""
    try:
        diff = run_diff.compare_retention_mean([a], [b])
    except DistillabError:
        return None
    return None if isinstance(diff, str) else diff.diff.within_noise


def tied_with(
    entry: Entry, front: list[Entry], same_size: float = SAME_SIZE, paired=paired_tie
) -> Entry | None:
    """The front model that keeps ``entry`` off the front only by point estimate: the best one no
    larger than it, when ``entry``'s retention/mean is within noise of it — by the paired interval
    over the same items where both are runs with per-item results, else by overlapping 95%
    intervals (conservative: it calls more ties). None when ``entry`` is on the front or shown worse."""
    if entry.bytes is None or entry.mean is None or any(entry is f for f in front):
        return None
    no_larger = [f for f in front if f.bytes <= entry.bytes * (1 + same_size)]
    best = max(no_larger, key=lambda f: f.mean, default=None)
    if best is None or best.mean < entry.mean:  # only a better front model can keep it off the front
        return None
    tie = paired(best.run, entry.run) if best.run and entry.run else None
    if tie is None:
        tie = _overlap(best.mean_interval, entry.mean_interval)
    return best if tie else None


def budget_advice(front: list[Entry], ties: dict[int, list[Entry]] | None = None) -> list[str]:
    """One line per Pareto model: from which size budget it is the best choice, and which models
    (``ties``: by ``id`` of the front model, from :func:`tied_with`) are within noise of it."""
    lines, ties = [], ties or {}
    for i, entry in enumerate(front):
        upper = front[i + 1].bytes if i + 1 < len(front) else None
        budget = f"{entry.bytes / 1e6:.0f} MB" + (f" to {upper / 1e6:.0f} MB" if upper else " and more")
        lines.append(
            f"- budget {budget}: **{entry.label}** ({entry.bytes / 1e6:.1f} MB, "
            f"retention/mean {format_cell(None, entry.mean, entry.mean_interval)})"
            + (
                f"; within noise of it: {', '.join(t.label for t in ties[id(entry)])}"
                if id(entry) in ties
                else ""
            )
        )
    return lines


def reference_groups(entries: list[Entry], metrics: list[str]) -> list[list[Entry]]:
    """Entries grouped by the model their retention is measured against, told apart by that model's
    scores on ``metrics`` (a quantize run of a pruned student divides by the student, a pipeline by
    the original teacher: their retentions do not compare)."""
    groups: dict[tuple, list[Entry]] = {}
    for e in entries:
        key = tuple(round(e.reference[m], 6) for m in metrics if e.reference.get(m) is not None)
        if key:
            groups.setdefault(key, []).append(e)
    return list(groups.values())


def reference_warning(entries: list[Entry], metrics: list[str]) -> str:
    groups = reference_groups(entries, metrics)
    if len(groups) < 2:
        return ""
    first = metrics[0]
    lines = [
        f"- reference with {first} = {g[0].reference.get(first, float('nan')):.4g}: "
        + ", ".join(e.label for e in g)
        for g in groups
    ]
    return (
        "\n\n**Retention here is measured against different models**, so compare it only within a "
        "group (set `model@teacher=...` on quantize runs to measure them against the original teacher):\n\n"
        + "\n".join(lines)
    )


MEAN_NOTE = (
    "\n\nretention/mean: each run's mean over its tasks' primary metrics (the suite's declared ones),"
    " with its 95% paired interval; the columns are the metrics asked for."
)


def markdown_report(entries: list[Entry], metrics: list[str]) -> str:
    pareto = pareto_front(entries)
    front = {id(e) for e in pareto}
    head = ["model", "params", "bytes on disk", *metrics, "retention/mean", "Pareto"]
    ties: dict[int, list[Entry]] = {}
    rows = []
    for e in entries:
        cells = [
            e.label,
            "n/a" if e.params is None else f"{e.params / 1e6:.1f}M",
            "n/a" if e.bytes is None else f"{e.bytes / 1e6:.1f} MB",
        ]
        cells += [format_cell(e.metrics.get(m), e.retention.get(m), e.interval.get(m)) for m in metrics]
        mean = format_cell(None, e.mean, e.mean_interval)
        tie = tied_with(e, pareto)
        if tie is not None:
            ties.setdefault(id(tie), []).append(e)
        rows.append([*cells, mean, "★" if id(e) in front else f"≈ {tie.label}" if tie else ""])
    advice = budget_advice(pareto, ties)
    text = markdown.table(head, rows) + MEAN_NOTE + reference_warning(entries, metrics)
    if advice:
        text += (
            "\n\n### Which model for this size budget?\n\n"
            + "\n".join(advice)
            + "\n\nThe front ranks point estimates: before preferring a model to its neighbour, check the "
            "difference on the same items (`distillab-report --a RUN_A --b RUN_B`)."
        )
        if ties:
            text += (
                " ≈ X: off the front only by point estimate: X is no larger (within 0.5%), and this model's "
                "retention/mean is within noise of X's (paired 95% interval over the same items where "
                "both runs kept per-item results, else overlapping intervals), so it has not been shown worse."
            )
    return text + "\n"
