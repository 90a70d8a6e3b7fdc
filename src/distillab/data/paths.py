"""Where local data lives: ``data.data_dir`` in config, else ``$DISTILLAB_DATA_DIR``, else ``../shared/data``."""

from __future__ import annotations

import os
from pathlib import Path

from distillab.errors import DistillabError


def resolve_data_dir(configured: str | None = None) -> Path:
    raw = configured or os.environ.get("DISTILLAB_DATA_DIR") or "../shared/data"
    path = Path(raw).expanduser().resolve()
    if not path.is_dir():
        raise DistillabError(
            f"paths.data_dir: {raw!r} is not a directory; set paths.data_dir=... or DISTILLAB_DATA_DIR "
            "to the folder holding gsm8k/, arc_challenge/, corpus/ ..."
        )
    return path
