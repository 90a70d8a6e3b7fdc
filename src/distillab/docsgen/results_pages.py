"""The docs' Results section, made from experiments/ when the site is built (never copied by hand).

experiments/NNN-name/README.md becomes results/NNN-name.md; the folder's other markdown files
(NOTES.md, the *_vs_*.md comparisons) and images go to results/NNN-name/; experiments/README.md
becomes results/index.md. Links are rewritten for the new places: a link to another study goes to
its page, a link to a file the site does not carry (a CSV, a script, the README) becomes its
repository path in code, so the site builds in strict mode without hiding anything.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator
from pathlib import Path

from distillab.config import CONFIG_DIR

REPO = Path(CONFIG_DIR).parent
EXPERIMENTS = REPO / "experiments"
IMAGES = {".png", ".svg", ".jpg", ".jpeg"}
_LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")


def site_path(repo_path: str) -> str | None:
    """Where a repository file lives on the site (None: the site does not carry it): docs/ pages,
    the README as the home page, experiments/ as the Results section."""
    if repo_path.startswith("docs/"):
        return repo_path.removeprefix("docs/")
    if repo_path == "README.md":
        return "index.md"
    parts = repo_path.split("/")
    if parts[0] != "experiments":
        return None
    if len(parts) == 1 or parts[1:] == ["README.md"] or parts[1:] == [""]:
        return "results/index.md"
    folder, rest = parts[1], parts[2:]
    if not (EXPERIMENTS / folder).is_dir() or not re.match(r"\d{3}-", folder):
        return None
    if not rest or rest in (["README.md"], [""]):
        return f"results/{folder}.md"
    name = "/".join(rest)
    if len(rest) == 1 and (name.endswith(".md") or Path(name).suffix.lower() in IMAGES):
        return f"results/{folder}/{name}"
    return None


def rewrite_links(text: str, repo_file: str, page: str) -> str:
    """Point the links of ``repo_file`` (shown at ``page`` on the site) at their places on the site."""
    here = posixpath.dirname(repo_file)

    def fix(match: re.Match) -> str:
        bang, label, target = match.groups()
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            return match.group(0)
        path, _, anchor = target.partition("#")
        resolved = posixpath.normpath(posixpath.join(here, path))
        if path.endswith("/") or (REPO / resolved).is_dir():
            resolved += "/"
        place = site_path(resolved.rstrip("/") + ("/" if resolved.endswith("/") else ""))
        if place is None and resolved.endswith("/"):
            place = site_path(resolved + "README.md")
        if place is None:
            shown = resolved.rstrip("/") or "."
            return f"{label} (`{shown}`)" if label and label.strip("`") != shown else f"`{shown}`"
        relative = posixpath.relpath(place, posixpath.dirname(page))
        return f"{bang}[{label}]({relative}{'#' + anchor if anchor else ''})"

    return _LINK.sub(fix, text)


def pages() -> Iterator[tuple[str, bytes | str]]:
    """``(site path, content)`` for the home page (the README) and every results page and image."""
    yield "index.md", rewrite_links((REPO / "README.md").read_text(), "README.md", "index.md")
    index = EXPERIMENTS / "README.md"
    if index.is_file():
        yield (
            "results/index.md",
            rewrite_links(index.read_text(), "experiments/README.md", "results/index.md"),
        )
    for folder in sorted(p for p in EXPERIMENTS.iterdir() if p.is_dir() and re.match(r"\d{3}-", p.name)):
        for file in sorted(folder.iterdir()):
            repo_file = f"experiments/{folder.name}/{file.name}"
            place = site_path(repo_file)
            if place is None or not file.is_file():
                continue
            if file.suffix == ".md":
                yield place, rewrite_links(file.read_text(), repo_file, place)
            else:
                yield place, file.read_bytes()
