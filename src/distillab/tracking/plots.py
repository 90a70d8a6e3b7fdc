"""Matplotlib figures saved as PNG (headless backend), for run directories and W&B."""

from __future__ import annotations

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
