"""Every config under conf/ composes; every group option resolves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from conftest import compose_config
from hydra.utils import instantiate
from omegaconf import OmegaConf

from distillab.config import CONFIG_DIR, to_plain
from distillab.config_schema import check_schema
from distillab.objectives.objective import build_objective

PRIMARY = [p.stem for p in Path(CONFIG_DIR).glob("*.yaml")]
GROUP_OPTIONS = [
    (group.name, option.stem)
    for group in sorted(Path(CONFIG_DIR).iterdir())
    if group.is_dir() and group.name not in {"experiment", "hydra"}
    for option in sorted(group.glob("*.yaml"))
]
# every experiment file, study arms included (conf/experiment/<study>/<arm>.yaml), with the app its
# `# app:` line names (run_arms.sh reads the same line)
EXPERIMENTS = [
    (
        str(p.relative_to(Path(CONFIG_DIR) / "experiment").with_suffix("")),
        re.search(r"^# app: (\w+)", p.read_text(), re.M),
    )
    for p in sorted((Path(CONFIG_DIR) / "experiment").rglob("*.yaml"))
]


def _resolve(cfg):
    """Resolve every interpolation and build every ``_target_`` that needs no model or data: a
    config that composes but names a missing class, or a key its class does not take, fails here."""
    cfg.paths.run_dir = "/tmp/distillab-test-run"  # ${hydra:...} only exists inside a Hydra app
    OmegaConf.resolve(cfg)
    check_schema(cfg)  # every shipped value obeys the schema (types, ranges, choices)
    if (
        cfg.get("trainer") is not None
        and cfg.trainer.get("accelerator") == "gpu"
        and not torch.cuda.is_available()
    ):
        # the GPU presets are built too, with their strategy and precision, on one CPU device
        cfg.trainer.accelerator, cfg.trainer.devices = "cpu", 1
    built = 0
    for key in ("optimizer", "scheduler", "callbacks", "trainer"):
        if cfg.get(key) is not None:
            assert instantiate(cfg[key]) is not None, key
            built += 1
    for key, method in (("student", "build"), ("prune", "apply"), ("quantize", "quantize")):
        if cfg.get(key) is not None:  # the group's class, built from its _target_
            assert hasattr(instantiate(cfg[key], _convert_="all"), method), key
    if cfg.get("objective") is not None:
        assert len(build_objective(to_plain(cfg.objective.terms)).terms) >= 1
    return built


@pytest.mark.parametrize("name", PRIMARY)
def test_primary_configs_compose(name):
    _resolve(compose_config([], config_name=name))


APP_OF_GROUP = {"prune": "prune", "quantize": "quantize", "speed": "quantize"}  # groups only those apps list


@pytest.mark.parametrize("group,option", GROUP_OPTIONS)
def test_every_group_option_composes(group, option):
    app = APP_OF_GROUP.get(group, "distill")
    cfg = compose_config([f"{group}={option}"], app)
    # the option is what the run gets: each value its file sets is in the composed config
    node = cfg[group]
    for key, value in _file_values(OmegaConf.load(Path(CONFIG_DIR) / group / f"{option}.yaml")):
        assert OmegaConf.select(node, key) == value, f"{group}={option}: {key}"
    built = _resolve(cfg)
    if app == "distill":
        assert built == 4  # distill.yaml builds an optimizer, a scheduler, callbacks and a trainer


def _file_values(node, prefix=""):
    """``(dotted key, value)`` of every plain value a config file sets itself (no defaults list, no
    interpolation, nothing a student override below replaces)."""
    for key, value in node.items_ex(resolve=False) if hasattr(node, "items_ex") else node.items():
        dotted = f"{prefix}{key}"
        if key == "defaults":
            continue
        if OmegaConf.is_dict(value):
            yield from _file_values(value, f"{dotted}.")
        elif not (isinstance(value, str) and ("${" in value or value == "???")):  # ???: the user gives it
            yield dotted, OmegaConf.to_container(value) if OmegaConf.is_list(value) else value


@pytest.mark.parametrize("name,app", EXPERIMENTS, ids=[name for name, _ in EXPERIMENTS])
def test_experiments_compose(name, app):
    assert app, f"conf/experiment/{name}.yaml has no '# app: <app>' line"
    cfg = compose_config([f"experiment={name}"], app.group(1))
    built = _resolve(cfg)
    assert built == 4 if app.group(1) == "distill" else built >= 0
    assert cfg.get("experiment_name"), f"{name}: names its runs (experiment_name)"


def test_every_study_keeps_its_arms_in_files():
    studies = [p for p in (Path(CONFIG_DIR) / "experiment").iterdir() if p.is_dir()]
    assert sum(len(list(s.glob("*.yaml"))) for s in studies) >= 15
