"""A pipeline stage's output, cached by the fingerprint of what it computes.

The fingerprint covers the stage's resolved config (minus where it writes and how it logs) and the
fingerprint of its input, so a changed upstream stage invalidates everything after it. A stage is
finished when its ``stage.json`` exists (written last, atomically); a re-run reuses it and does no work.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from distillab.files import files_digest, json_digest, read_json, write_json_atomic

STAGE_FILE = "stage.json"
# Keys that say where or how verbosely a stage runs, not what it computes.
PLACEMENT_KEYS = ("paths", "logger", "threads", "experiment_name", "task_name", "allocator")


# How often a stage saves state to resume from: a resumed heal ends with the same weights.
RESUME_KEYS = {"heal": ("checkpoint_every",)}


def fingerprint(stage_cfg: dict[str, Any], upstream: str) -> str:
    what = {k: v for k, v in stage_cfg.items() if k not in PLACEMENT_KEYS}
    for block, keys in RESUME_KEYS.items():
        if isinstance(what.get(block), dict):
            what[block] = {k: v for k, v in what[block].items() if k not in keys}
    what["data_dir"] = str(stage_cfg.get("paths", {}).get("data_dir"))  # the data itself does matter
    return json_digest({"config": what, "upstream": upstream}, 12, sort_keys=True)


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


def model_identity(spec: dict[str, Any]) -> dict[str, Any]:
    """A model spec as it enters a fingerprint. A local model is named by its folder name and a hash
    of its config and weight files' bytes: moving it keeps the key, two different folders that share
    a name (``.../student``) do not collide, nor does a local copy with the hub id it came from.
    Anything else (a hub id, ``tiny:llama``) is taken as written."""
    path = Path(str(spec["name_or_path"]))
    if not path.exists():
        return dict(spec)
    if spec.get("gguf_file"):
        files = [path / spec["gguf_file"]]
    else:
        files = sorted(f for f in path.iterdir() if f.suffix in WEIGHT_SUFFIXES or f.name == "config.json")
    return {**spec, "name_or_path": f"{path.name}@{files_digest(files)}"}


def finished_record(stage_dir: Path) -> dict[str, Any] | None:
    """The stage's record if it finished and its output is still there (else it runs again)."""
    path = stage_dir / STAGE_FILE
    if not path.is_file():
        return None
    record = read_json(path, f"delete {stage_dir} to run the stage again")
    output = record.get("output") or {}
    if record.get("app") and not (Path(output["name_or_path"]) / output.get("gguf_file", "")).exists():
        return None
    return record


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
