"""Files a run leaves behind: written whole or not at all, and named by what they hold.

Every result, cache entry and export is written under a temporary sibling name and renamed into
place, so a reader (or a rerun after ``kill -9``) sees the old file or the complete new one, never a
half-written one (``tests/test_kill_during_writes.py``). Cache entries are named by a sha256 of what
they depend on; each caller keeps the exact serialisation it has always used, so entries written by
earlier versions keep their names. Model files are keyed by their bytes (:func:`files_digest`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from distillab.errors import DistillabError

log = logging.getLogger(__name__)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; it replaces ``path`` when the block ends
    without an exception, and is removed otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_folder(target: Path) -> Iterator[Path]:
    """Yield a folder beside ``target`` to fill; it replaces ``target`` (an earlier version too) when
    the block ends without an exception. A kill between the two renames leaves the previous folder
    as ``<name>.old<pid>`` and no ``<name>``; leftovers of interrupted writes go at the next write."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in [*target.parent.glob(f"{target.name}.partial*"), *target.parent.glob(f"{target.name}.old*")]:
        shutil.rmtree(stale, ignore_errors=True)
    tmp = target.with_name(f"{target.name}.partial{os.getpid()}")
    tmp.mkdir()
    try:
        yield tmp
        old = target.with_name(f"{target.name}.old{os.getpid()}")
        if target.exists():
            target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def read_json(path: Path, remedy: str = "re-run what wrote it, or leave this run out") -> Any:
    """A JSON file a run left behind; damage (cut short by a crash or a copy, not JSON at all) is a
    one-line :class:`DistillabError` naming the file and what to do, never a decoder traceback."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except UnicodeDecodeError:
        raise DistillabError(f"{path}: not a text file; the file is damaged: {remedy}") from None
    except json.JSONDecodeError as err:
        raise DistillabError(
            f"{path}: not valid JSON ({err.msg}, line {err.lineno}); the file is damaged or cut short: {remedy}"
        ) from None


def write_json_atomic(path: Path, payload: Any, indent: int | None = 2) -> None:
    write_text_atomic(path, json.dumps(payload, indent=indent, default=str))


def digest(data: str | bytes, length: int | None = None) -> str:
    """sha256 hex digest of ``data`` (text is UTF-8), cut to ``length`` characters."""
    raw = data.encode() if isinstance(data, str) else data
    return hashlib.sha256(raw).hexdigest()[:length]


def json_digest(payload: Any, length: int, sort_keys: bool = False) -> str:
    """A cache key: the digest of ``payload`` as JSON (``default=str`` for paths and the like)."""
    return digest(json.dumps(payload, sort_keys=sort_keys, default=str), length)


def files_digest(files: Iterable[Path], digest_size: int = 8) -> str:
    """A content key of several files: each file's name and bytes, read in 16 MiB chunks (model
    weights), blake2b. Stage fingerprints carry it: the algorithm and size must not change."""
    content = hashlib.blake2b(digest_size=digest_size)
    for file in files:
        content.update(file.name.encode())
        with file.open("rb") as handle:
            while chunk := handle.read(1 << 24):
                content.update(chunk)
    return content.hexdigest()


def keep_earlier_csv(log_dir: Path) -> Path | None:
    """Lightning's CSV writer deletes an existing ``metrics.csv`` in its folder, so a resumed run
    (``ckpt_path=last``, a resumed heal) or a rerun into the same folder would lose the steps logged
    before. Rename it to the first free ``metrics.<n>.csv`` instead: every segment's log stays, in order."""
    current = Path(log_dir) / "metrics.csv"
    if not current.is_file():
        return None
    n = 1
    while (kept := current.with_name(f"metrics.{n}.csv")).exists():
        n += 1
    current.rename(kept)
    # What Lightning then warns ("previous log files ... will be deleted") is no longer true.
    warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")
    log.info("earlier %s kept as %s", current, kept.name)
    return kept
