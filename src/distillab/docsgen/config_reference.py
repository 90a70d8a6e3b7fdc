"""The configuration reference (docs/reference/configuration.md), generated from the configs.

For every app the config is composed as the app composes it; each key's description is the comment
beside it in the file that set it last (Hydra's defaults list says which file and package), else the
meaning of the schema rule that checks it (``config_schema.RULES``). Type and valid values come from
that rule where one exists, else from the default's own type. ``tests/test_docs.py`` fails when a key
has no description or the committed page differs from :func:`render`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra._internal.config_repository import (
    CachingConfigRepository,  # the defaults list: which file set a key
)
from hydra._internal.defaults_list import create_defaults_list
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from distillab.config import CONFIG_DIR
from distillab.config_schema import RULES, Rule, rules_for
from distillab.docsgen.yaml_comments import first_comment, key_comments
from distillab.markdown import table

APPS = ("distill", "prune", "quantize", "pipeline", "evaluate", "generate")


@dataclass(frozen=True)
class Source:
    """One file of the defaults list and the package its keys land in ('' = the root)."""

    path: Path
    package: str
    group: str  # '' for a primary config


@dataclass(frozen=True)
class KeyDoc:
    key: str
    kind: str
    default: str
    valid: str
    meaning: str


@dataclass(frozen=True)
class GroupDoc:
    override: str  # what the command line says: group= or group@package=
    default: str
    options: list[str]
    meaning: str


def _sources(app: str) -> list[Source]:
    loader = GlobalHydra.instance().config_loader()
    defaults = create_defaults_list(
        repo=CachingConfigRepository(loader.repository),
        config_name=app,
        overrides_list=[],
        prepend_hydra=False,
        skip_missing=False,
    )
    found = []
    for d in defaults.defaults:
        path = Path(CONFIG_DIR) / f"{d.config_path}.yaml"
        group = d.config_path.rpartition("/")[0]
        if path.is_file() and not group.startswith("hydra"):
            found.append(Source(path, d.package or "", group))
    return found


def _leaves(node: Any, prefix: str = ""):
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from _leaves(value, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, node


def _rule_for(key: str) -> Rule | None:
    return next(rules_for(key), None)


def _kind(value: Any) -> str:
    if value is None:
        return "any"
    if isinstance(value, str) and value.startswith("${"):
        return "interpolation"
    return {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "mapping"}.get(
        type(value), type(value).__name__
    )


# Hydra's own keys mean the same in every block.
HYDRA_KEYS = {
    "_target_": "the class (or function) Hydra builds this block into; follow it to the code",
    "_partial_": "build a factory that the code calls later with what it supplies (parameters, optimizer)",
}


def _rule_meaning(key: str) -> str:
    """The schema rule's meaning for ``key``, else what Hydra's own keys mean ('' if neither)."""
    rule = _rule_for(key)
    return rule.meaning if rule and rule.meaning else HYDRA_KEYS.get(key.rpartition(".")[2], "")


def _key_doc(key: str, value: Any, meaning: str) -> KeyDoc:
    rule = _rule_for(key)
    return KeyDoc(
        key=key,
        kind=rule.kind.__name__ if rule else _kind(value),
        default=_shown(value),
        valid=rule.expected() if rule else "",
        meaning=meaning,
    )


def _describe(key: str, sources: list[Source]) -> str:
    for source in reversed(sources):  # the file that set the key last is the one that explains it
        if source.package and not (key == source.package or key.startswith(source.package + ".")):
            continue
        inner = key[len(source.package) + 1 :] if source.package else key
        comment = key_comments(str(source.path)).get(inner)
        if comment:
            return comment
    return _rule_meaning(key)


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return value if value else "''"
    return "null" if value is None else str(value).replace("True", "true").replace("False", "false")


def app_keys(app: str) -> tuple[list[KeyDoc], list[GroupDoc]]:
    """Every leaf key of ``app``'s composed config (Hydra's own block aside) and its config groups."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name=app)
        sources = _sources(app)
    plain = OmegaConf.to_container(cfg, resolve=False)
    plain.pop("hydra", None)
    keys = [_key_doc(key, value, _describe(key, sources)) for key, value in _leaves(plain)]
    groups = []
    for source in sources:
        if not source.group or source.path.stem.startswith("_"):
            continue  # a primary config, or a shared base (data/_corpus) that is not a choice
        natural = source.group.replace("/", ".")
        override = source.group if source.package == natural else f"{source.group}@{source.package}"
        options = sorted(p.stem for p in (Path(CONFIG_DIR) / source.group).glob("*.yaml") if p.stem[0] != "_")
        groups.append(GroupDoc(override, source.path.stem, options, first_comment(str(source.path))))
    return keys, groups


def option_keys() -> dict[str, list[tuple[str, list[KeyDoc]]]]:
    """``{group: [(option, its own keys), ...]}`` for every option file of every group: the keys a
    choice such as ``objective=distill_lens`` brings, which no app's default composition shows."""
    root = Path(CONFIG_DIR)
    found: dict[str, list[tuple[str, list[KeyDoc]]]] = {}
    for group in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in ("hydra", "experiment")):
        # a key means the same in every option of a group: one option's comment serves its siblings
        shared: dict[str, str] = {}
        for path in sorted(group.glob("*.yaml")):
            for inner, comment in key_comments(str(path)).items():
                shared.setdefault(inner, comment)
        for path in sorted(group.glob("*.yaml")):
            if path.stem.startswith("_"):
                continue
            own = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
            own.pop("defaults", None)
            package = group.name
            docs = []
            for inner, value in _leaves(own):
                key = f"{package}.{inner}"
                comment = key_comments(str(path)).get(inner) or shared.get(inner) or _rule_meaning(key)
                docs.append(_key_doc(key, value, comment))
            found.setdefault(group.name, []).append((path.stem, docs))
    return found


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _key_table(docs: list[KeyDoc], value_column: str) -> str:
    rows = [[f"`{k.key}`", k.kind, f"`{_cell(k.default)}`", _cell(k.valid), _cell(k.meaning)] for k in docs]
    return table(["key", "type", value_column, "valid", "meaning"], rows)


def render() -> str:
    lines = [
        "# Configuration reference",
        "",
        "Generated from `conf/` and `src/distillab/config_schema.py` by `python -m distillab.docsgen`;",
        "do not edit by hand (`make docs` regenerates it, and a test fails when it is stale).",
        "Every app composes its own config (`conf/<app>.yaml` and the groups it lists); change any key",
        "on the command line (`key=value`), pick a group option (`group=option`), or add a key that is",
        "not there (`+key=value`). `--cfg job` prints the composed config without running.",
        "",
        "Types and valid values come from the schema below where a rule names the key; the schema is",
        "checked before any model loads, and a value it refuses stops the run with one line and exit",
        "status 2 ([Troubleshooting](../troubleshooting.md)).",
        "",
    ]
    for app in APPS:
        keys, groups = app_keys(app)
        lines += [f"## distillab-{app}", "", first_comment(str(Path(CONFIG_DIR) / f"{app}.yaml")), ""]
        if groups:
            rows = [
                [
                    f"`{g.override}`",
                    f"`{g.default}`",
                    ", ".join(f"`{o}`" for o in g.options),
                    _cell(g.meaning),
                ]
                for g in groups
            ]
            lines += ["### Config groups", "", table(["group", "default", "options", "meaning"], rows), ""]
        lines += ["### Keys", "", _key_table(keys, "default"), ""]
    lines += [
        "## Every group option",
        "",
        "What each option of each config group sets (the keys of its own file; a group used at another",
        "place, such as `objective@heal.objective` in distillab-prune, takes the same keys under that place).",
        "",
    ]
    for group, options in option_keys().items():
        lines += [f"### {group}", ""]
        for option, docs in options:
            path = Path(CONFIG_DIR) / group / f"{option}.yaml"
            lines += [f"**`{group}={option}`** — {_cell(first_comment(str(path)))}", ""]
            if docs:
                lines += [_key_table(docs, "value"), ""]
    rows = [[f"`{p}`", r.kind.__name__, _cell(r.expected()), _cell(r.meaning)] for p, r in RULES.items()]
    lines += [
        "## The schema",
        "",
        "`src/distillab/config_schema.py`: every rule, checked on the composed config of every app",
        "(`*` stands for one key part: any task, term or perplexity set).",
        "",
        table(["pattern", "type", "valid", "meaning"], rows),
        "",
    ]
    return "\n".join(lines)


def missing_descriptions() -> list[str]:
    apps = [f"{app}: {k.key}" for app in APPS for k in app_keys(app)[0] if not k.meaning]
    options = [
        f"conf/{group}/{option}.yaml: {k.key}"
        for group, entries in option_keys().items()
        for option, docs in entries
        for k in docs
        if not k.meaning
    ]
    headers = [
        f"conf/{group}/{option}.yaml: (the file's opening comment: what the option is)"
        for group, entries in option_keys().items()
        for option, _ in entries
        if not first_comment(str(Path(CONFIG_DIR) / group / f"{option}.yaml"))
    ]
    return apps + options + headers
