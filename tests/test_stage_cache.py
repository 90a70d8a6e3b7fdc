"""Stage-cache keys: what identifies a model, when a finished stage counts as finished."""

from __future__ import annotations

import shutil

from distillab.stage_cache import (
    fingerprint,
    finished_record,
    locate,
    mark_finished,
    model_identity,
)
from distillab.versions import library_versions, version_drift


def folder(path, weights: bytes):
    path.mkdir(parents=True)
    (path / "config.json").write_text('{"num_hidden_layers": 2}')
    (path / "model.safetensors").write_bytes(weights)
    (path / "notes.txt").write_text("not part of the model")
    return path


def test_a_local_model_is_known_by_its_contents_not_its_location(tmp_path):
    a = folder(tmp_path / "run_a" / "student", b"weights-a")
    b = folder(tmp_path / "run_b" / "student", b"weights-b")  # same name, other weights
    moved = tmp_path / "elsewhere" / "student"
    shutil.copytree(a, moved)
    (moved / "notes.txt").write_text("edited")  # not a weight or config file: same model
    ident = model_identity({"name_or_path": str(a), "dtype": "float32"})
    assert ident == model_identity({"name_or_path": str(moved), "dtype": "float32"})
    assert ident != model_identity({"name_or_path": str(b), "dtype": "float32"})
    assert ident["name_or_path"].startswith("student@") and ident["dtype"] == "float32"
    # a hub id is taken as written, so it never equals a local copy that shares its last name
    hub = {"name_or_path": "HuggingFaceTB/student"}
    assert model_identity(hub) == hub != ident


def test_a_gguf_model_is_known_by_its_file(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "a.gguf").write_bytes(b"one")
    (tmp_path / "m" / "b.gguf").write_bytes(b"two")
    ids = [
        model_identity({"name_or_path": str(tmp_path / "m"), "gguf_file": f}) for f in ("a.gguf", "b.gguf")
    ]
    assert ids[0] != ids[1]


def test_a_stage_whose_output_was_deleted_is_not_finished(tmp_path):
    out = folder(tmp_path / "01-distill-abc" / "student", b"w")
    record = {"app": "distill", "fingerprint": "abc", "output": {"name_or_path": str(out)}}
    mark_finished(tmp_path / "01-distill-abc", record)
    assert finished_record(tmp_path / "01-distill-abc") == record
    assert locate(tmp_path / "elsewhere" / "01-distill-abc", [tmp_path]) == tmp_path / "01-distill-abc"
    shutil.rmtree(out)
    assert finished_record(tmp_path / "01-distill-abc") is None
    assert locate(tmp_path / "run" / "01-distill-abc", [tmp_path]) == tmp_path / "run" / "01-distill-abc"


def test_a_reused_stage_computed_with_other_library_versions_is_reported():
    now = library_versions()
    assert {"torch", "transformers", "distillab"} <= set(now)
    assert version_drift({"versions": now}) == []
    assert version_drift({}) == []  # recorded before versions were kept: nothing to compare
    older = {**now, "transformers": "4.0.0"}
    older.pop("gguf")
    assert version_drift({"versions": older}) == [
        f"gguf absent -> {now['gguf']}",
        f"transformers 4.0.0 -> {now['transformers']}",
    ]


def test_how_often_a_heal_checkpoints_does_not_change_what_a_stage_computes():
    stage = {"heal": {"trainer": {"max_steps": 400}, "only_layers_next_to_gaps": False}, "seed": 0}
    same = fingerprint(stage, "up")
    assert fingerprint({**stage, "heal": {**stage["heal"], "checkpoint_every": 150}}, "up") == same
    assert fingerprint({**stage, "heal": {**stage["heal"], "checkpoint_every": None}}, "up") == same
    assert fingerprint({**stage, "heal": {**stage["heal"], "trainer": {"max_steps": 401}}}, "up") != same
