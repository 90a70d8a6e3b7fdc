"""Model folders written atomically: saved beside the target, then renamed into place, so an
interrupted export never leaves a folder that looks complete. A kill between the two renames
leaves the previous export as ``<name>.old<pid>`` (and no ``<name>``); leftovers of earlier
interrupted exports are removed at the next export."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def save_model_atomic(model, target: Path, tokenizer=None) -> Path:
    target = Path(target)
    for stale in [*target.parent.glob(f"{target.name}.partial*"), *target.parent.glob(f"{target.name}.old*")]:
        shutil.rmtree(stale, ignore_errors=True)
    tmp = target.with_name(f"{target.name}.partial{os.getpid()}")
    model.save_pretrained(tmp)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    old = target.with_name(f"{target.name}.old{os.getpid()}")
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return target
