"""The one markdown table builder, and the pipeline's stage table that now carries intervals."""

from __future__ import annotations

import pytest

from distillab.markdown import table
from distillab.tracking.stage_table import markdown as stage_markdown


def test_table_has_a_separator_per_column_and_one_line_per_row():
    text = table(["a", "b"], [[1, "x"], [2.5, None]])
    assert text.splitlines() == ["| a | b |", "|---|---|", "| 1 | x |", "| 2.5 | None |"]


def test_a_row_of_the_wrong_width_is_refused():
    with pytest.raises(ValueError, match="3 cells for 2 columns"):
        table(["a", "b"], [[1, 2, 3]])


def test_stage_table_prints_retention_with_its_interval():
    row = {
        "stage": "prune", "params": 100e6, "bytes": 2e8, "tokens_per_s": 12.0, "runtime": "transformers",
        "metrics": {"arc_easy/acc_norm": 0.5, "piqa/acc_norm": 0.6},
        "retention": {"arc_easy/acc_norm": 0.9, "piqa/acc_norm": None},
        "retention_interval": {"arc_easy/acc_norm": [0.85, 0.95]},
        "mean_retention": 0.9, "mean_retention_interval": [0.8, 0.97],
    }  # fmt: skip
    line = stage_markdown([row]).splitlines()[2]
    assert (
        line == "| prune | 100.0M | 200.0 MB | 12.0 | 0.5 (90.0% [85.0, 95.0]) | 0.6 | 90.0% [80.0, 97.0] |"
    )
