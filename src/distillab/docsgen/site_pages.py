"""mkdocs-gen-files script (mkdocs.yml): the pages made when the site is built — the Results section
from experiments/ and one API page per part of the package (mkdocstrings renders the docstrings)."""

from __future__ import annotations

from pathlib import Path

import mkdocs_gen_files

import distillab
from distillab.docsgen.results_pages import pages

for place, content in pages():
    with mkdocs_gen_files.open(place, "wb" if isinstance(content, bytes) else "w") as out:
        out.write(content)

ROOT = Path(distillab.__file__).parent
parts = sorted(
    p.stem if p.is_file() else p.name
    for p in ROOT.iterdir()
    if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").is_file())
)
index = [
    "# API reference",
    "",
    "Generated from the docstrings by mkdocstrings, one page per part of the package.",
    "",
]
for part in parts:
    path = ROOT / part
    modules = (
        [f"distillab.{part}"]
        if not path.is_dir()
        else [
            f"distillab.{part}.{m.stem}"
            for m in sorted(path.glob("*.py"))
            if m.stem not in ("__init__", "__main__", "site_pages")
        ]
    )
    with mkdocs_gen_files.open(f"reference/api/{part}.md", "w") as out:
        out.write(f"# distillab.{part}\n\n" + "\n".join(f"::: {m}\n" for m in modules))
    index.append(f"- [distillab.{part}]({part}.md)")
with mkdocs_gen_files.open("reference/api/index.md", "w") as out:
    out.write("\n".join(index) + "\n")
