"""experiments/offline_bundle.py: parts never exceed the transfer limit and reassemble byte for
byte; the wheel list leaves out the target's accelerator stack and keeps distillab's own pins."""

from __future__ import annotations

import importlib.util
import os

from conftest import REPO

spec = importlib.util.spec_from_file_location("offline_bundle", REPO / "experiments" / "offline_bundle.py")
bundle = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bundle)


def test_parts_stay_under_the_limit_and_chunks_reassemble(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    contents = {
        "big.gguf": os.urandom(2500),
        "a.whl": os.urandom(700),
        "b.whl": os.urandom(300),
        "empty": b"",
    }
    for name, data in contents.items():
        (source / name).write_bytes(data)
    files = sorted(source.iterdir(), key=lambda p: -p.stat().st_size)
    parts = bundle.split_into_parts(files, tmp_path / "out", part_bytes=1000)

    assert all(sum(f.stat().st_size for f in part.iterdir()) <= 1000 for part in parts)
    pieces = {f.name: f.read_bytes() for part in parts for f in part.iterdir()}
    chunks = sorted(n for n in pieces if n.startswith("big.gguf.chunk"))
    assert len(chunks) == 3 and b"".join(pieces[n] for n in chunks) == contents["big.gguf"]
    for name in ("a.whl", "b.whl", "empty"):
        assert pieces[name] == contents[name]
    assert not any(source.iterdir())  # moved, not copied: the staging folder empties


def test_a_file_that_exactly_fills_its_parts_leaves_no_empty_part(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "model.gguf").write_bytes(os.urandom(2000))
    parts = bundle.split_into_parts([tmp_path / "in" / "model.gguf"], tmp_path / "out", part_bytes=1000)
    assert [sorted(f.name for f in p.iterdir()) for p in parts] == [
        ["model.gguf.chunk000"],
        ["model.gguf.chunk001"],
    ]


def test_the_wheel_list_leaves_torch_out_and_keeps_distillab_pins_the_target_has():
    have = {"transformers", "numpy", "lightning", "pyyaml"}
    pins = bundle.requirements_closure(["distillab"], have, "3.12", also=("pyyaml",))
    assert "torch" not in pins and "numpy" not in pins and "wandb" not in pins
    assert {"transformers", "lightning", "hydra-core", "lm-eval", "pyyaml"} <= set(pins)
