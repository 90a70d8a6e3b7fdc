"""A pipeline stage's output, cached by the fingerprint of what it computes.

The fingerprint covers the stage's resolved config (minus where it writes and how it logs) and the
fingerprint of its input, so a changed upstream stage invalidates everything after it. A stage is
finished when its ``stage.json`` exists (written last, atomically); a re-run reuses it and does no work.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from distillab.tracking.report import write_json_atomic

STAGE_FILE = "stage.json"
# Keys that say where or how verbosely a stage runs, not what it computes.
PLACEMENT_KEYS = ("paths", "logger", "threads", "experiment_name", "task_name", "malloc_mmap_threshold_mb")


def fingerprint(stage_cfg: dict[str, Any], upstream: str) -> str:
    what = {k: v for k, v in stage_cfg.items() if k not in PLACEMENT_KEYS}
    what["data_dir"] = str(stage_cfg.get("paths", {}).get("data_dir"))  # the data itself does matter
    payload = json.dumps({"config": what, "upstream": upstream}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def finished_record(stage_dir: Path) -> dict[str, Any] | None:
    path = stage_dir / STAGE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def mark_finished(stage_dir: Path, record: dict[str, Any]) -> None:
    write_json_atomic(stage_dir / STAGE_FILE, record)


def locate(stage_dir: Path, elsewhere: Iterable[str | Path]) -> Path:
    """``stage_dir``, or the same finished stage in another pipeline run.

    A stage directory's name carries its position, name and fingerprint, and the fingerprint chains
    every upstream stage's, so a finished directory of that name in another run computed exactly
    this stage (e.g. the shared distill and prune stages of an ordering study's two arms).
    """
    if finished_record(stage_dir) is None:
        for other in elsewhere:
            candidate = Path(other) / stage_dir.name
            if finished_record(candidate) is not None:
                return candidate
    return stage_dir
