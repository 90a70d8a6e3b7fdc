"""Files a run leaves behind, handed back damaged (cut short by a crash or a copy): every reader turns
the damage into one DistillabError naming the file and what to do, never a decoder traceback."""

from __future__ import annotations

import json

import pytest

from distillab.errors import DistillabError
from distillab.files import read_json


def _cut(path, payload):
    text = json.dumps(payload, indent=2)
    path.write_text(text[: len(text) // 2])


def test_read_json_names_the_file_and_the_remedy(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"a": 1}))
    assert read_json(path) == {"a": 1}
    _cut(path, {"teacher": {"x": 1.0}, "student": {"x": 0.5}})
    with pytest.raises(DistillabError, match=r"results\.json: not valid JSON .*cut short: do this"):
        read_json(path, "do this")
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(DistillabError, match="not a text file"):
        read_json(path)


def test_a_damaged_stage_record_says_which_stage_folder_to_delete(tmp_path):
    from distillab.stage_cache import STAGE_FILE, finished_record

    stage = tmp_path / "01-distill-abc"
    stage.mkdir()
    _cut(stage / STAGE_FILE, {"app": "distill", "output": {"name_or_path": str(tmp_path)}})
    with pytest.raises(DistillabError, match=f"delete {stage}"):
        finished_record(stage)


def test_a_damaged_sweep_failure_record_is_one_line(tmp_path):
    from distillab.sweeps import sweep_failures
    from distillab.tracking.runs import find_failures

    (tmp_path / "0").mkdir()
    _cut(tmp_path / "0" / "failure.json", {"error": "ValueError", "message": "x"})
    with pytest.raises(DistillabError, match=r"failure\.json: not valid JSON"):
        sweep_failures(tmp_path)
    with pytest.raises(DistillabError, match=r"failure\.json: not valid JSON"):
        find_failures([tmp_path])


def test_a_damaged_teacher_cache_manifest_says_to_rebuild_it(tmp_path):
    from distillab.data.teacher_cache import TopKCacheDataset

    _cut(tmp_path / "manifest.json", {"shards": [{"file": "0.safetensors"}], "temperature": 2.0, "k": 4})
    with pytest.raises(DistillabError, match=f"delete {tmp_path} to rebuild the teacher cache"):
        TopKCacheDataset(tmp_path)
