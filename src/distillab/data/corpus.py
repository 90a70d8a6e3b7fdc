"""Read a corpus config into a list of documents (strings), from local files or the hub.

Formats: ``jsonl`` (one JSON object per line; ``text_field`` or a ``template`` over fields, e.g.
GSM8K's question + answer), ``text`` (plain text files, split on ``separator`` when given) and
``hub`` (a hub data set, when online).
"""

from __future__ import annotations

import glob
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from distillab.errors import DistillabError

FORMATS = ("jsonl", "text", "hub")


def source_files(source: Mapping[str, Any], data_dir: Path, key: str = "data.source") -> list[Path]:
    """Files matched by ``source.files`` (globs relative to the data directory), sorted. ``key``:
    where the source sits in the config, for messages."""
    patterns = source.get("files")
    if not patterns:
        raise DistillabError(f"{key}.files: missing; give a glob relative to paths.data_dir")
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    files = sorted({Path(p) for pat in patterns for p in glob.glob(str(data_dir / pat))})
    if not files:
        raise DistillabError(f"{key}.files: {patterns} matched no file under {data_dir}")
    return files


def read_documents(source: Mapping[str, Any], data_dir: Path, key: str = "data.source") -> list[str]:
    """All non-empty documents of a source, in file order (``key``: its place in the config)."""
    fmt = source.get("format", "jsonl")
    if fmt == "jsonl":
        docs = [d for f in source_files(source, data_dir, key) for d in _jsonl_documents(f, source)]
    elif fmt == "text":
        docs = [
            d
            for f in source_files(source, data_dir, key)
            for d in _text_documents(f, source.get("separator"))
        ]
    elif fmt == "hub":
        docs = _hub_documents(source)
    else:
        raise DistillabError(f"{key}.format: unknown {fmt!r}; valid: {', '.join(FORMATS)}")
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise DistillabError(f"{key}: no non-empty documents in {source.get('files') or source.get('path')}")
    return docs


def _render(record: Mapping[str, Any], source: Mapping[str, Any], where: str) -> str:
    template, field = source.get("template"), source.get("text_field", "text")
    try:
        return template.format(**record) if template else str(record[field])
    except KeyError as err:
        raise DistillabError(f"data.source: {where} has no field {err}; fields: {sorted(record)}") from None


def _jsonl_documents(path: Path, source: Mapping[str, Any]) -> list[str]:
    docs = []
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DistillabError(
                    f"{path}:{lineno}: not UTF-8 text (byte {err.start} of the line); data.source files must be UTF-8"
                ) from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise DistillabError(f"{path}:{lineno}: not valid JSON (data.source.format=jsonl)") from None
            docs.append(_render(record, source, f"{path.name}:{lineno}"))
    return docs


def _text_documents(path: Path, separator: str | None) -> list[str]:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise DistillabError(
            f"{path}: not UTF-8 text (byte {err.start}); data.source files must be UTF-8"
        ) from None
    # Universal newlines, as text-mode reading gives: the offline WikiText-2 copy has CRLF line ends,
    # and the text every model is scored on must not depend on how a file was written.
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.split(separator) if separator else [text]


def _hub_documents(source: Mapping[str, Any]) -> list[str]:
    import datasets

    try:
        ds = datasets.load_dataset(source["path"], source.get("name"), split=source.get("split", "train"))
    except Exception as err:  # network, missing dataset, ... : one line for the user
        raise DistillabError(
            f"data.source.path: cannot load hub data set {source.get('path')!r}: {err}"
        ) from None
    return [_render(r, source, source["path"]) for r in ds]
