"""Which library versions and which code computed something, and what changed since: a reused
pipeline stage and a resumed training checkpoint say so instead of silently mixing versions, and
every ``results.json`` records both."""

from __future__ import annotations

import importlib.metadata
import subprocess
from pathlib import Path
from typing import Any

# Libraries whose upgrade can change what a stage or a training step computes. They are recorded,
# not fingerprinted: a patch release would otherwise throw away hours of cached stages; a reused
# stage or a resumed checkpoint computed with other versions is reported instead.
TRACKED_LIBRARIES = (
    "distillab",
    "torch",
    "transformers",
    "lightning",
    "lm_eval",
    "gguf",
    "torchao",
    "llama_cpp_python",
)


def library_versions() -> dict[str, str]:
    """Installed versions of :data:`TRACKED_LIBRARIES` (missing ones left out)."""
    versions = {}
    for name in TRACKED_LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def version_drift(record: dict[str, Any], current: dict[str, str] | None = None) -> list[str]:
    """``"name old -> new"`` for each library whose version differs from the one that computed
    ``record`` (a record from before versions were recorded has no drift to report)."""
    then = record.get("versions") or {}
    now = library_versions() if current is None else current
    return [
        f"{name} {then.get(name, 'absent')} -> {now.get(name, 'absent')}"
        for name in sorted(set(then) | set(now))
        if then and then.get(name) != now.get(name)
    ]


def code_revision() -> dict[str, Any] | None:
    """The git commit of the distillab checkout this process runs from, and whether its ``src/`` or
    ``conf/`` hold uncommitted changes; ``None`` for an installed copy (no checkout) or without git.
    Written into every ``results.json``, so a figure names the code that produced it."""
    package = Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(package), *args], capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    root = git("rev-parse", "--show-toplevel")
    # a copy installed into a virtualenv that happens to sit inside some checkout is not that checkout
    if root is None or package != Path(root).resolve() / "src" / "distillab":
        return None
    commit = git("rev-parse", "HEAD")
    changes = git("status", "--porcelain", "--", f"{root}/src", f"{root}/conf")
    if commit is None or changes is None:
        return None
    return {"commit": commit, "dirty": bool(changes)}


def code_line(code: dict[str, Any] | None) -> str:
    """``1b607eb`` / ``1b607eb + uncommitted changes`` / ``not a git checkout``: for tables and W&B."""
    if not code:
        return "not a git checkout"
    return code["commit"][:7] + (" + uncommitted changes" if code.get("dirty") else "")
