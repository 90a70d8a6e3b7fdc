"""A catalogue of bad inputs, every app: each gives one ``error:`` line naming the key or file, exit
status 2, no traceback, and leaves an earlier run's outputs in the same directory untouched.

In process (the apps' Hydra task functions, the same code the CLI runs) so 40 cases take seconds;
``test_bad_input.py`` checks the real CLI for a subset.
"""

from __future__ import annotations

import json

import pytest
from bad_input_cases import CATALOGUE
from conftest import compose_config, tiny_overrides

from distillab import distill, evaluate, pipeline, prune, quantize
from distillab.quantization import llama_cpp

APPS = {"distill": distill, "prune": prune, "quantize": quantize, "evaluate": evaluate, "pipeline": pipeline}


def base(app: str, run_dir, data_dir, overrides: list[str]) -> list[str]:
    common = [
        f"paths.run_dir={run_dir}",
        f"paths.data_dir={data_dir}",
        "logger=csv",
        "threads=1",
        "eval=none",
    ]
    if app == "distill":  # tiny_overrides leaves student.num_remove out when a case sets the student
        own_student = [o for o in overrides if o.startswith("student=")]
        return [*tiny_overrides(run_dir, data_dir, *own_student), "logger=csv"]
    if app == "prune":
        return [
            *common,
            "model=tiny_llama",
            "calibration.data.source.files=corpus/tiny.jsonl",
            "calibration.data.block_size=32",
            "calibration.num_blocks=2",
            "heal.enabled=false",
        ]
    if app == "quantize":
        gguf = [] if "quantize=torchao" in overrides else ["quantize.pre_tokenizer=default"]
        return [*common, "model=tiny_llama", *gguf]
    if app == "evaluate":
        return [*common, "model=tiny_llama"]
    return [*common, "model=tiny_llama"]


# without the optional llama.cpp runtime, a K-quant names the extra that provides it (a copy: the
# catalogue itself is shared with the troubleshooting page)
CASES = CATALOGUE + (
    [] if llama_cpp.is_available() else [("quantize", ["quantize.gguf_type=q4_k_m"], "gguf-runtime")]
)


@pytest.fixture
def bad_files(tiny_corpus, tmp_path_factory):
    corpus = tiny_corpus / "corpus"
    (corpus / "empty.jsonl").write_text("\n")
    (corpus / "broken.jsonl").write_text('{"text": "fine"}\n{not json\n')
    (corpus / "notext.jsonl").write_text('{"body": "no text field"}\n')
    root = tmp_path_factory.mktemp("models")
    (root / "empty").mkdir(exist_ok=True)
    vocab300 = root / "vocab300"
    if not vocab300.exists():
        from distillab.models.tiny import build_tiny

        model, tok = build_tiny("llama", vocab_size=300)
        model.save_pretrained(vocab300)
        tok.save_pretrained(vocab300)
    (corpus / "binary.bin").write_bytes(b"\x00\x01\xff\xfe binary")
    (corpus / "latin1.jsonl").write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')  # not UTF-8
    gguf_dir = root / "gguf"
    gguf_dir.mkdir(exist_ok=True)
    (gguf_dir / "truncated.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x05" * 9)  # header cut short
    (gguf_dir / "not_gguf.gguf").write_bytes(b"PK\x03\x04 a zip, not a GGUF file")
    parts = root / "parts"
    for name, keep in (
        ("no_weights", ("config.json", "tokenizer.json")),
        ("no_tokenizer", ("config.json", "model.safetensors")),
    ):
        (parts / name).mkdir(parents=True, exist_ok=True)
        for f in keep:
            if (vocab300 / f).is_file():
                (parts / name / f).write_bytes((vocab300 / f).read_bytes())
    cut_weights = parts / "cut_weights"  # a whole model folder whose model.safetensors was cut short
    cut_weights.mkdir(parents=True, exist_ok=True)
    for f in vocab300.iterdir():
        data = f.read_bytes()
        (cut_weights / f.name).write_bytes(data[: len(data) // 2] if f.suffix == ".safetensors" else data)
    corrupt = root / "corrupt.ckpt"
    corrupt.write_bytes(b"PK\x03\x04" + b"\x00" * 64)  # a zip cut before its central directory
    return {
        "empty_folder": str(root / "empty"),
        "vocab300": str(vocab300),
        "gguf_dir": str(gguf_dir),
        "no_weights": str(parts / "no_weights"),
        "no_tokenizer": str(parts / "no_tokenizer"),
        "corrupt_ckpt": str(corrupt),
        "cut_weights": str(cut_weights),
    }


@pytest.mark.parametrize("app,overrides,message", CASES, ids=[f"{c[0]}:{' '.join(c[1])}"[:70] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_earlier_outputs_stay(
    app, overrides, message, tmp_path, tiny_corpus, bad_files, capsys
):
    assert len(CASES) >= 30
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    earlier = {"results.json": json.dumps({"earlier": True}), "retention.md": "earlier table\n"}
    for name, text in earlier.items():
        (run_dir / name).write_text(text)
    for key, value in bad_files.items():
        overrides = [o.replace(f"{{{key}}}", value) for o in overrides]
        message = message.replace(f"{{{key}}}", value)
    if app == "pipeline":
        from hydra import initialize_config_dir

        from distillab.config import CONFIG_DIR

        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            from hydra import compose

            cfg = compose(
                config_name="pipeline", overrides=[*base(app, run_dir, tiny_corpus, overrides), *overrides]
            )
            with pytest.raises(SystemExit) as exit_info:
                pipeline.main.__wrapped__(cfg)
    else:
        cfg = compose_config([*base(app, run_dir, tiny_corpus, overrides), *overrides], app)
        with pytest.raises(SystemExit) as exit_info:
            APPS[app].main.__wrapped__(cfg)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and message in lines[0], err[-1500:]
    assert "Traceback" not in err
    for name, text in earlier.items():
        assert (run_dir / name).read_text() == text
    assert_names_a_real_key(lines[0], cfg)


OPTIONAL_KEYS = ("primary",)  # eval.tasks.<task>.primary: defaulted for known tasks, else required


def assert_names_a_real_key(line: str, cfg) -> None:
    """The key an error starts with exists in the app's composed config (or names a file): a message
    must never send the user to a key that does not exist."""
    from omegaconf import OmegaConf

    named = line.removeprefix("error: ").split(":", 1)[0].split(" ", 1)[0]
    if "/" in named or "." in named and named.rsplit(".", 1)[1] in ("jsonl", "json", "txt", "gguf", "ckpt"):
        return  # a file (path or name:line), not a key
    if (
        named in ("data", "objective", "student", "teacher", "trainer", "model")
        or OmegaConf.select(cfg, named, default="<missing>") != "<missing>"
    ):
        return
    parent, _, last = named.rpartition(".")
    if last in OPTIONAL_KEYS and OmegaConf.select(cfg, parent, default="<missing>") != "<missing>":
        return  # a documented key that may be left out (the message says to set it)
    raise AssertionError(f"the error names {named!r}, which is not a key of the composed config: {line}")
