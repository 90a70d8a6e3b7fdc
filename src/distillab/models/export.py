"""Model folders written atomically (``files.atomic_folder``): an interrupted export never leaves a
folder that looks complete."""

from __future__ import annotations

from pathlib import Path

from distillab.files import atomic_folder


def save_model_atomic(model, target: Path, tokenizer=None) -> Path:
    with atomic_folder(target) as tmp:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return Path(target)
