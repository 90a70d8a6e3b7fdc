"""Shared fixtures: one thread, offline everything, a throwaway cache, tiny models and corpora."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from distillab.config import CONFIG_DIR  # noqa: E402

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Model/tokenization/eval caches go to a per-session temp dir, never ~/.cache."""
    cache = tmp_path_factory.getbasetemp() / "cache"
    monkeypatch.setenv("DISTILLAB_CACHE_DIR", str(cache))
    yield


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """A data directory with a small jsonl corpus (and links to the shared benchmark data)."""
    root = tmp_path_factory.mktemp("data")
    (root / "corpus").mkdir()
    lines = [
        json.dumps({"text": f"Story {i}: the student learned from the teacher and answered {i} questions."})
        for i in range(200)
    ]
    (root / "corpus" / "tiny.jsonl").write_text("\n".join(lines) + "\n")
    for name in ("arc_challenge", "gsm8k", "wikitext2"):
        if (SHARED_DATA / name).exists():
            (root / name).symlink_to(SHARED_DATA / name)
    return root


def tiny_overrides(run_dir: Path, data_dir: Path, *extra: str) -> list[str]:
    """A distillation run that finishes in seconds: tiny Llama teacher, 2 of 4 layers removed."""
    own_student = any(e.startswith("student=") for e in extra)
    return [
        "model=tiny_llama",
        "objective=kd",  # the tests' baseline objective (the demo heals with ild); a later objective= wins
        # evenly spaced (the demo cuts by Block Influence; tests that want it say student.score=...)
        *([] if own_student else ["student.num_remove=2", "student.score=null"]),
        f"paths.run_dir={run_dir}",
        f"paths.data_dir={data_dir}",
        "data.source.files=corpus/tiny.jsonl",
        "data.block_size=32",
        "data.batch_size=2",
        "data.val_fraction=0.1",
        "data.max_val_blocks=2",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "trainer.limit_val_batches=1",
        "trainer.log_every_n_steps=1",
        "eval=none",
        "eval_before_training=false",
        "threads=1",
        "speed.compile=false",  # seconds of inductor per process; tests/test_compiling.py covers auto and true
        *extra,
    ]


def compose_config(overrides: list[str], config_name: str = "distill"):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)
