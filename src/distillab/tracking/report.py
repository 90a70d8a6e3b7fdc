"""Run-directory outputs: results JSON, a markdown retention table, and the printed summary."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from distillab.evaluation.retention import RetentionRow, markdown_table


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write via a temporary file and rename, so an interrupted write never looks complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    os.replace(tmp, path)


def write_results(run_dir: Path, results: dict[str, Any], rows: list[RetentionRow], header: str) -> str:
    """Save ``results.json`` and ``retention.md`` in ``run_dir``; return the markdown."""
    write_json_atomic(run_dir / "results.json", {**results, "retention_rows": [asdict(r) for r in rows]})
    markdown = f"{header}\n\n{markdown_table(rows)}\n"
    tmp = run_dir / f"retention.md.tmp{os.getpid()}"
    tmp.write_text(markdown)
    os.replace(tmp, run_dir / "retention.md")
    return markdown
