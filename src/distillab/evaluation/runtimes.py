"""The same quantized file scored by two runtimes: llama.cpp (what users run) against torch (the
weights de-quantized by transformers), on the same items, as a paired difference per primary metric."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from distillab.evaluation import items, paired
from distillab.evaluation.items import SuiteItems


def runtime_differences(
    torch_metrics: Mapping[str, float],
    torch_items: SuiteItems | None,
    llama_metrics: Mapping[str, float],
    llama_items: SuiteItems | None,
    primary: Mapping[str, str],
) -> dict[str, dict[str, Any]]:
    """``{task/metric: {torch, llama_cpp, difference, low, high, p, n_items}}`` for every primary
    metric both scored; the difference (llama.cpp − torch) and its 95% paired-bootstrap interval only
    where both scored the same items."""
    out: dict[str, dict[str, Any]] = {}
    for task, metric in primary.items():
        key = f"{task}/{metric}"
        if key not in torch_metrics or key not in llama_metrics:
            continue
        entry: dict[str, Any] = {"torch": torch_metrics[key], "llama_cpp": llama_metrics[key]}
        a, b = (torch_items or {}).get(task), (llama_items or {}).get(task)
        a_cols, b_cols = (items.columns(a, metric) if a else None), (items.columns(b, metric) if b else None)
        if a_cols is not None and b_cols is not None and items.same_items(a, b):
            diff = paired.paired_difference(
                a_cols, b_cols, items.aggregate_for(metric), seed=paired.seed_for(task)
            )
            entry |= {
                "difference": diff.interval.value,
                "low": diff.interval.low,
                "high": diff.interval.high,
                "p": diff.p_value,
                "n_items": diff.n_items,
            }
        out[key] = entry
    return out


def markdown(differences: Mapping[str, Mapping[str, Any]], runtime: str) -> str:
    """The report's table: each primary metric in torch and in llama.cpp, and their difference."""
    lines = [
        f"Scored in llama.cpp ({runtime}) against torch (the same file de-quantized by transformers), same items:",
        "",
        "| metric | torch | llama.cpp | llama.cpp − torch [95% paired interval] |",
        "|---|---|---|---|",
    ]
    for key, e in differences.items():
        if "difference" in e:
            noise = " (within noise)" if e["low"] <= 0 <= e["high"] else ""
            diff = f"{e['difference']:+.4f} [{e['low']:+.4f}, {e['high']:+.4f}]{noise}"
        else:
            diff = "no paired interval (different items)"
        lines.append(f"| {key} | {e['torch']:.4f} | {e['llama_cpp']:.4f} | {diff} |")
    return "\n".join(lines)
