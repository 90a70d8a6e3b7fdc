"""Matplotlib figures saved as PNG (headless backend), for run directories and W&B."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def layer_scores_bar(scores: Sequence[float], removed: Sequence[int], title: str, out: Path) -> Path:
    """One bar per layer; the layers chosen for removal in a different colour."""
    fig, ax = plt.subplots(figsize=(max(6, 0.3 * len(scores)), 3.2))
    colours = ["tab:red" if i in set(removed) else "tab:blue" for i in range(len(scores))]
    ax.bar(range(len(scores)), scores, color=colours)
    ax.set_xlabel("layer (red: removed)")
    ax.set_ylabel("importance")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def pareto_plot(
    points: Sequence[tuple[str, float, float, Sequence[float | None] | None]],
    front: Sequence[str],
    out: Path,
    xlabel: str = "bytes on disk (MB, log scale)",
) -> Path:
    """Mean retention (%) vs bytes on disk (MB, log scale), or another cost (``xlabel``); the Pareto
    front joined by a line. Each point ``(label, x, retention %, [low, high] as fractions or None)``
    carries its 95% interval.

    Points carry numbers and the key beside the axes names them: with a dozen models, several at the
    same size, full labels on the points overlap into something unreadable.
    """
    fig, ax = plt.subplots(figsize=(7, 4.5))
    key = []
    for number, (label, megabytes, retention, interval) in enumerate(points, start=1):
        on_front = label in front
        below, above = error_bar(retention, interval)
        color = "tab:red" if on_front else "tab:gray"
        ax.errorbar(
            megabytes, retention, yerr=[[below], [above]], color=color, marker="o", capsize=3, zorder=3
        )
        ax.annotate(
            str(number), (megabytes, retention), fontsize=7, xytext=(3, 3), textcoords="offset points"
        )
        key.append(
            f"{number:>2}  {'★ ' if on_front else ''}{tick_label(label, 60)}".replace("\n", "\n      ")
        )
    line = sorted((mb, r) for label, mb, r, _ in points if label in front)
    if line:
        ax.plot(*zip(*line, strict=True), color="tab:red", linewidth=1, zorder=2, label="Pareto front")
        ax.legend(fontsize=8)
    ax.text(1.02, 1.0, "\n".join(key), transform=ax.transAxes, fontsize=7, va="top", family="monospace")
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("retention/mean vs teacher (%), 95% paired interval")
    ax.grid(alpha=0.3)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out


def tick_label(label: str, width: int = 26) -> str:
    """A run label short enough for an axis: each ``[experiment/]a.b.key=value`` override as
    ``[experiment/]key=value``, wrapped onto lines of ``width`` characters."""
    return textwrap.fill(" ".join(_short_override(w) for w in label.split()), width)


def _short_override(word: str) -> str:
    if "=" not in word:
        return word
    key, value = word.split("=", 1)
    prefix, _, key = key.rpartition("/")
    return (prefix + "/" if prefix else "") + key.rsplit(".", 1)[-1] + "=" + value


def percent_or_gap(fraction: float | None) -> float:
    """A retention as a bar height: a metric a model lacks is a gap (NaN), not a 0% bar."""
    return float("nan") if fraction is None else 100 * fraction


def error_bar(value: float, interval: Sequence[float | None] | None) -> tuple[float, float]:
    """(below, above) lengths of an error bar, in percent, from a retention interval (fractions);
    (nan, nan) draws no bar where there is no interval."""
    if not interval or interval[0] is None or interval[1] is None:
        return float("nan"), float("nan")
    # max(0, ·): a point on its interval's edge can land 1e-14 outside it (summation order)
    return max(0.0, value - 100 * interval[0]), max(0.0, 100 * interval[1] - value)


def retention_vs_tokens(
    series: dict[tuple[str, str], Sequence[tuple[float, float, Sequence[float | None] | None]]], out: Path
) -> Path:
    """Retention (%) against training tokens (log scale), one line per ``(metric, recipe)``: a colour
    per metric, a line style per recipe (how the runs trained: device, precision, batch), so points
    of different recipes are never joined into one curve. Each point ``(tokens, retention %, [low,
    high] as fractions or None)`` carries its 95% interval as an error bar."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    metrics = list(dict.fromkeys(metric for metric, _ in series))
    recipes = list(dict.fromkeys(recipe for _, recipe in series))
    styles = [("o", "-"), ("s", "--"), ("^", ":"), ("D", "-.")]
    for (metric, recipe), points in series.items():
        points = sorted(points, key=lambda p: p[0])
        x = [p[0] for p in points]
        y = [p[1] for p in points]
        bars = [error_bar(p[1], p[2]) for p in points]
        marker, line = styles[recipes.index(recipe) % len(styles)]
        ax.errorbar(
            x,
            y,
            yerr=[[b[0] for b in bars], [b[1] for b in bars]],
            marker=marker,
            linestyle=line,
            capsize=3,
            color=f"C{metrics.index(metric) % 10}",
            label=metric if len(recipes) == 1 else f"{metric} ({recipe})",
        )
    ax.axhline(100, color="gray", linewidth=0.8, linestyle="--")
    # symlog: logarithmic above the smallest budget, linear below it, so the un-trained model sits at 0
    positive = [p[0] for points in series.values() for p in points if p[0] > 0]
    if positive:
        ax.set_xscale("symlog", linthresh=min(positive))
        # room for the last point's error bar (autoscale clips it); no negative-token ticks on the left
        ax.set_xlim(left=-0.5 * min(positive), right=max(positive) * 1.6)
    ax.set_xlabel("healing tokens (log scale above the first budget; 0: before training)")
    ax.set_ylabel("retention vs teacher (%), 95% paired interval")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out


def per_task_bars(
    labels: Sequence[str],
    retention: dict[str, Sequence[float]],
    out: Path,
    intervals: dict[str, Sequence[Sequence[float | None] | None]] | None = None,
) -> Path:
    """Grouped bars: retention (%) per model, one bar per task/metric; with ``intervals`` (per
    metric, per model: [low, high] as fractions) each bar carries its 95% interval."""
    labels = [tick_label(label) for label in labels]
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(labels)), 4))
    width = 0.8 / max(1, len(retention))
    for i, (metric, values) in enumerate(retention.items()):
        spans = (intervals or {}).get(metric) or [None] * len(values)
        bars = [error_bar(v, iv) for v, iv in zip(values, spans, strict=True)]
        yerr = [[b[0] for b in bars], [b[1] for b in bars]]
        ax.bar([x + i * width for x in range(len(labels))], values, width, label=metric, yerr=yerr, capsize=2)
    ax.axhline(100, color="gray", linewidth=0.8, linestyle="--")
    ax.set_xticks(
        [x + width * (len(retention) - 1) / 2 for x in range(len(labels))], labels, rotation=25, ha="right"
    )
    ax.set_ylabel("retention vs teacher (%)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the bars, never on them
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out


def retention_vs_params(
    points: Sequence[tuple[str, float, float, Sequence[float | None] | None]], out: Path
) -> Path:
    """retention/mean (%) against parameters (M), one labelled point per model ``(label, params M,
    retention %, [low, high] as fractions or None)``, with its 95% interval as an error bar."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label, params, value, interval in points:
        below, above = error_bar(value, interval)
        ax.errorbar([params], [value], yerr=[[below], [above]], marker="o", capsize=3)
        ax.annotate(
            tick_label(label, 40), (params, value), fontsize=7, xytext=(3, 3), textcoords="offset points"
        )
    ax.set_xlabel("student parameters (M)")
    ax.set_ylabel("retention/mean vs teacher (%)")
    ax.grid(alpha=0.3)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")  # room for long run labels
    plt.close(fig)
    return out
