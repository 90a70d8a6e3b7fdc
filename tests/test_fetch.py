"""``distillab-models --gguf-file``: a GGUF copied onto a machine with no package index is checked
against the same sha256 as a download, and a wrong or missing file changes nothing."""

from __future__ import annotations

import pytest

from distillab.errors import DistillabError
from distillab.models.fetch import OFFLINE_MODELS, fetch, main


def test_a_gguf_file_of_other_bytes_is_refused_and_no_model_folder_appears(tmp_path):
    fake = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    fake.write_bytes(b"GGUF but not the expected bytes")
    with pytest.raises(DistillabError, match="sha256 .* does not match the expected"):
        fetch("smollm2-135m-instruct", root=tmp_path / "cache", gguf_file=fake)
    folder = tmp_path / "cache" / "models" / OFFLINE_MODELS["smollm2-135m-instruct"].folder
    assert not folder.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--gguf-file", "/no/such.gguf", "smollm2-135m-instruct"],
            "--gguf-file: /no/such.gguf is not a file",
        ),
        (
            ["--gguf-file", "/x.gguf", "smollm2-135m-instruct", "gemma-3-270m"],
            "--gguf-file: name exactly one model",
        ),
    ],
)
def test_gguf_file_mistakes_exit_2_with_one_line(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DISTILLAB_CACHE_DIR", str(tmp_path))
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
