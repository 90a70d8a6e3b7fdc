"""Which library versions computed something, and what changed since: a reused pipeline stage and a
resumed training checkpoint both say so instead of silently mixing versions."""

from __future__ import annotations

import importlib.metadata
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
