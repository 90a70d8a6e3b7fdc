"""Hydra/OmegaConf glue below every app: the config folder, resolvers, plain dicts, and the run's
precision resolved from its trainer blocks. What an app does with a config: ``entry.py``."""

from __future__ import annotations

import dataclasses
import logging
import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from distillab.errors import DistillabError
from distillab.precision import Precision, device_type_for, resolve_precision

# Third-party deprecation chatter that the user cannot act on.
warnings.filterwarnings("ignore", message=".*LeafSpec.*")
warnings.filterwarnings("ignore", message=".*anonymous setting has no effect.*")

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")

# `${one_minus:${..alpha}}`: hard-label weight as 1 - alpha, so one knob sets both KD weights.
if not OmegaConf.has_resolver("one_minus"):
    OmegaConf.register_new_resolver("one_minus", lambda x: 1.0 - float(x))


def to_plain(cfg: DictConfig | dict | None) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg or {})


def trainer_blocks(cfg: DictConfig) -> list[tuple[str, DictConfig]]:
    """``(key, block)`` of every trainer the run will use: ``trainer``, ``heal.trainer`` when healing."""
    heal = cfg.get("heal")
    blocks = (
        ("trainer", cfg.get("trainer")),
        ("heal.trainer", heal and heal.get("enabled", True) and heal.get("trainer")),
    )
    return [(key, block) for key, block in blocks if block]


def resolve_run_precision(cfg: DictConfig, trainers: list[tuple[str, DictConfig]] | None = None) -> Precision:
    """``cfg.precision`` resolved for the device the run's (first) trainer runs on; no side effects."""
    trainers = trainer_blocks(cfg) if trainers is None else trainers
    accelerator = trainers[0][1].get("accelerator") if trainers else None
    return resolve_precision(cfg.get("precision"), device_type_for(accelerator))


def configure_precision(cfg: DictConfig) -> Precision:
    """Resolve ``precision`` (auto | bf16 | float32) once for the run (``precision.running`` enters it).

    Every trainer block whose ``precision`` is null (``trainer``, ``heal.trainer``) trains in the
    resolved one (bf16 -> ``bf16-mixed``). An explicit ``trainer.precision`` is kept: with bf16,
    ``32-true`` trains the student in float32 while frozen models (the teacher too) stay in bf16;
    only a bf16 trainer under an explicit ``precision=float32`` is refused (a contradiction).
    """
    trainers = trainer_blocks(cfg)
    precision = resolve_run_precision(cfg, trainers)
    for key, trainer in trainers:
        asked = trainer.get("precision")
        if asked is None:
            with open_dict(trainer):
                trainer.precision = precision.trainer_precision
        elif precision.setting == "float32" and "bf16" in str(asked):
            raise DistillabError(
                f"{key}.precision: {asked!r} contradicts precision={precision.setting}; drop one "
                f"({key}.precision=null follows precision)"
            )
    if trainers:
        precision = dataclasses.replace(precision, train=str(trainers[0][1].precision))
    logging.getLogger("distillab").info("precision: %s", precision.describe())
    return precision


def build_target(node: Any, key: str, kind: str, needs: str, hint: str = "") -> Any:
    """``hydra.utils.instantiate`` a config node that names its class by ``_target_`` (a loss term,
    a student kind, a pruning method, a quantization backend). Every mistake is one line naming
    ``key``: no ``_target_``, a class that does not import, a keyword it does not take, a value it
    refuses, or a class of the wrong kind (one without ``needs``)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    hint = f"; {hint}" if hint else ""
    node = to_plain(node) if isinstance(node, DictConfig) else node
    if not isinstance(node, dict) or "_target_" not in node:
        raise DistillabError(f"{key}: no _target_{hint}")
    try:
        built = instantiate(node, _convert_="all")
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, DistillabError | TypeError | ValueError):  # the class refused its settings
            # a class may name its group ("objective: temperature must be > 0"): the key replaces it
            message = str(cause).removeprefix(f"{key.split('.')[0]}: ")
            raise DistillabError(f"{key}: {message}") from None
        raise DistillabError(f"{key}._target_: {str(err).strip().splitlines()[0]}") from None
    if not hasattr(built, needs):
        raise DistillabError(f"{key}._target_: {node['_target_']} is not {kind}{hint}")
    return built
