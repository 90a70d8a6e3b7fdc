"""``python -m distillab.docsgen``: rewrite the generated pages; ``--check``: exit 1 if any is stale."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from distillab.config import CONFIG_DIR
from distillab.docsgen import config_reference, troubleshooting
from distillab.files import write_text_atomic

DOCS = Path(CONFIG_DIR).parent / "docs"
PAGES = {
    DOCS / "reference" / "configuration.md": config_reference.render,
    DOCS / "troubleshooting.md": troubleshooting.render,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m distillab.docsgen", description=__doc__)
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a page is stale")
    args = parser.parse_args(argv)
    stale = []
    for path, render in PAGES.items():
        text = render()
        if path.is_file() and path.read_text() == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, text)
            print(f"wrote {path.relative_to(DOCS.parent)}")
    if args.check and stale:
        names = ", ".join(str(p.relative_to(DOCS.parent)) for p in stale)
        print(f"stale: {names}; run `python -m distillab.docsgen`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
