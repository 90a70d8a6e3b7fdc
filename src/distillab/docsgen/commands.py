"""The shell commands the README and the docs tell a reader to run, as the tests check them.

Every line of a fenced code block that runs ``make <target>`` or a ``distillab-*`` console script
(``.venv/bin/`` and leading ``VAR=value`` settings allowed, ``\\`` continuations joined, ``#``
comments dropped) is one :class:`Command`. ``<placeholders>`` stand for paths the reader fills in.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

_FENCE = re.compile(r"^\s*(```|~~~)")
_ENV = re.compile(r"^[A-Z_][A-Z0-9_]*=")


@dataclass(frozen=True)
class Command:
    source: str  # file:line
    program: str  # make | distillab-<app>
    args: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.program} {' '.join(self.args)}".strip()


def _logical_lines(block: list[tuple[int, str]]):
    """Join ``\\`` continuations; yield (first line number, text)."""
    pending, start = "", 0
    for number, line in block:
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        yield start, pending + line
        pending = ""
    if pending:
        yield start, pending


def parse_line(text: str) -> tuple[str, tuple[str, ...]] | None:
    """``(program, args)`` if the line runs make or a distillab console script, else None."""
    text = text.strip().removeprefix("$ ")
    try:
        words = shlex.split(text, comments=True)
    except ValueError:
        return None
    while words and _ENV.match(words[0]):  # OMP_NUM_THREADS=2 distillab-...
        words = words[1:]
    if not words:
        return None
    program = words[0].removeprefix(".venv/bin/").removeprefix("$(VENV)/bin/")
    if program == "make" or re.fullmatch(r"distillab-[a-z]+", program):
        return program, tuple(words[1:])
    return None


def commands_in(path: Path, root: Path) -> list[Command]:
    found, block, fenced = [], [], False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if _FENCE.match(line):
            if fenced:
                for start, text in _logical_lines(block):
                    parsed = parse_line(text)
                    if parsed:
                        found.append(Command(f"{path.relative_to(root)}:{start}", *parsed))
            fenced, block = not fenced, []
            continue
        if fenced:
            block.append((number, line))
    return found


def documented_files(root: Path) -> list[Path]:
    """The README, every docs page, and every study write-up (they become the Results pages)."""
    files = [root / "README.md", *sorted((root / "docs").rglob("*.md"))]
    files += sorted((root / "experiments").glob("*.md")) + sorted((root / "experiments").glob("*/*.md"))
    return [f for f in files if f.is_file()]


def all_commands(root: Path) -> list[Command]:
    return [c for f in documented_files(root) for c in commands_in(f, root)]
