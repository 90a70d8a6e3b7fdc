"""Nothing secret is logged: values under secret-looking keys are replaced before any config is
written (Hydra's ``.hydra/`` copies, W&B's run config, stage configs)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from distillab.files import write_text_atomic

# Key parts that mark a secret (matched on whole parts of the last key component, split at "_", "-"
# and ".", so `hub_token` and `wandb_api_key` match but `max_new_tokens` or `pre_tokenizer` do not).
SECRET_PARTS = ("token", "secret", "password", "passwd", "apikey", "credential", "credentials")


def is_secret_key(key: Any) -> bool:
    name = str(key).lower().lstrip("+~").rsplit(".", 1)[-1]
    parts = re.split(r"[_\-]", name)
    return "api_key" in name or any(part in SECRET_PARTS for part in parts)


def redact(config: Any) -> Any:
    """The config with every value under a secret-looking key replaced: nothing secret is logged.
    Secrets belong in the environment (WANDB_API_KEY, HF_TOKEN), which no run directory records."""
    if isinstance(config, dict):
        return {k: "<redacted>" if is_secret_key(k) else redact(v) for k, v in config.items()}
    if isinstance(config, list):
        return [redact(v) for v in config]
    if isinstance(config, str) and "=" in config and is_secret_key(config.split("=", 1)[0]):
        return config.split("=", 1)[0] + "=<redacted>"  # a Hydra override string
    return config


def redact_saved_configs(run_dir: Path) -> None:
    """Hydra saves the composed config and the command-line overrides in ``.hydra/`` before the run
    starts; rewrite them without secret values."""
    import yaml

    for path in (run_dir / ".hydra").glob("*.yaml"):
        text = path.read_text()
        write_text_atomic(path, yaml.safe_dump(redact(yaml.safe_load(text)), sort_keys=False))
