"""Model folders written atomically: saved beside the target, then renamed into place, so an
interrupted export never leaves a folder that looks complete (and an older export stays until
the new one is whole)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def save_model_atomic(model, target: Path, tokenizer=None) -> Path:
    target = Path(target)
    tmp = target.with_name(f"{target.name}.partial{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    old = target.with_name(f"{target.name}.old{os.getpid()}")
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return target
