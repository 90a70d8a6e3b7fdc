"""A Hydra callback: after a multirun, list the jobs that failed (their ``failure.json``) and exit
non-zero — after every other job has finished, never instead of them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from distillab.files import write_json_atomic


def sweep_failures(sweep_dir: Path) -> list[dict[str, Any]]:
    return [
        {"job": path.parent.name, **json.loads(path.read_text())}
        for path in sorted(sweep_dir.glob("*/failure.json"), key=lambda p: p.parent.name)
    ]


class FailureReport(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        failures = sweep_failures(sweep_dir)
        if not failures:
            return
        write_json_atomic(sweep_dir / "failures.json", failures)
        for f in failures:
            print(f"error: sweep job {f['job']} failed: {f['error']}: {f['message']}", file=sys.stderr)
        sys.exit(1)
