"""The comment that describes each key of a config file: the YAML loaders drop comments, and the
comments are where the configs say what a key means.

A key's description is its trailing ``# comment``, else the block of comment lines directly above
it (no blank line between). Keys inside a flow mapping (``{limit: 100, ...}``) have none of their
own: the schema's pattern rules describe them (``eval.tasks.*.limit``).
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w@.-]*|'[^']+'|\"[^\"]+\"):(?:\s|$)")


def _trailing_comment(line: str) -> str:
    """The ``# ...`` after a value, ignoring ``#`` inside quotes."""
    quote = None
    for i, ch in enumerate(line):
        if ch in "'\"" and quote in (None, ch):
            quote = None if quote else ch
        elif ch == "#" and quote is None and (i == 0 or line[i - 1] in " \t"):
            return line[i + 1 :].strip()
    return ""


@cache
def key_comments(path: str) -> dict[str, str]:
    """``{dotted key path within the file: description}`` for every block-style key of ``path``."""
    found: dict[str, str] = {}
    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing mappings
    above: list[str] = []  # comment lines directly above the current line
    header = True  # the comment block that opens a file describes the file, not its first key
    for raw in Path(path).read_text().splitlines():
        stripped = raw.strip()
        if not stripped:
            above, header = [], False
            continue
        if stripped.startswith("#"):
            if not stripped.startswith("# @package"):
                above.append(stripped.lstrip("#").strip())
            continue
        match = _KEY.match(raw)
        if not match:  # a list item or a continued value
            above = []
            continue
        indent, key = len(match["indent"]), match["key"].strip("'\"")
        while stack and stack[-1][0] >= indent:
            stack.pop()
        dotted = ".".join([k for _, k in stack] + [key])
        comment = _trailing_comment(raw[match.end() - 1 :]) or ("" if header else " ".join(above))
        header = False
        if comment:
            found[dotted] = comment
        stack.append((indent, key))
        above = []
    return found


def first_comment(path: str) -> str:
    """The first sentence of a file's opening comment block: what the option is ('' if none)."""
    block = []
    for line in Path(path).read_text().splitlines():
        text = line.strip()
        if text.startswith("# @package") or re.match(r"^# app: ", text):
            continue
        if not text.startswith("#"):
            break
        block.append(text.lstrip("#").strip())
    joined = " ".join(part for part in block if part)
    return re.split(r"(?<=[.!?])\s", joined, maxsplit=1)[0].rstrip(":") if joined else ""
