"""Run-directory outputs: results JSON, a markdown retention table, and the printed summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distillab import machine, precision
from distillab.evaluation.items import SuiteItems, write_suite
from distillab.evaluation.retention import RetentionRow, markdown_table
from distillab.files import write_json_atomic, write_text_atomic
from distillab.versions import code_line, code_revision, library_versions


def write_results(
    run_dir: Path,
    results: dict[str, Any],
    rows: list[RetentionRow],
    header: str,
    items: dict[str, SuiteItems] | None = None,
) -> str:
    """Save ``results.json``, ``retention.md`` and ``items/<model>/<task>.csv`` in ``run_dir``;
    return the markdown.

    Both say the precision the run computed in (the process's, :mod:`distillab.precision`) and the
    machine (:mod:`distillab.machine`); results.json also the library versions and the code's
    commit (:mod:`distillab.versions`).
    The per-item files are written first: results.json appearing marks the run complete."""
    for model, suite in (items or {}).items():
        write_suite(run_dir / "items" / model, suite)
    used = precision.current()
    where = machine.describe_machine(used.device_type)
    provenance = {"versions": library_versions(), "code": code_revision()}
    results = {"precision": used.as_dict(), "machine": where, **provenance, **results}
    write_json_atomic(run_dir / "results.json", {**results, "retention_rows": [r.saved() for r in rows]})
    line = f"precision: {used.describe()}\n\nmachine: {machine.one_line(where)}; code: {code_line(provenance['code'])}"
    markdown = (
        f"{header}\n\n{line}\n\n{markdown_table(rows)}\n" if header else f"{line}\n\n{markdown_table(rows)}\n"
    )
    write_text_atomic(run_dir / "retention.md", markdown)
    return markdown
