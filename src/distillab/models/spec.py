"""A model spec: what a YAML file under ``conf/model/`` describes, validated."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch

from distillab.errors import DistillabError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ModelSpec:
    """Where a model comes from and how to instantiate it.

    ``name_or_path``: a hub id, a local HF folder, a folder holding ``gguf_file``, or
    ``tiny:<arch>`` for an in-process random model (tests). ``trust_remote_code`` stays off unless
    a config turns it on.
    """

    name_or_path: str
    gguf_file: str | None = None
    dtype: str = "float32"
    attn_implementation: str | None = "sdpa"
    trust_remote_code: bool = False
    seed: int = 0  # only for tiny:<arch> random initialisation

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], key: str = "model") -> ModelSpec:
        known = {f.name for f in fields(cls)}
        unknown = set(cfg) - known
        if unknown:
            raise DistillabError(f"{key}: unknown keys {sorted(unknown)}; valid: {sorted(known)}")
        if not cfg.get("name_or_path"):
            raise DistillabError(f"{key}.name_or_path: missing; give a hub id, a local folder or tiny:llama")
        spec = cls(**dict(cfg))
        if spec.dtype not in DTYPES:
            raise DistillabError(f"{key}.dtype: {spec.dtype!r} is not one of {', '.join(DTYPES)}")
        return spec

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]
