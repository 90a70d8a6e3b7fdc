"""The task registry: what distillab knows about each evaluation task, in one checked-in YAML per task.

``evaluation/lm_eval_tasks/<task>.yaml`` is an lm-eval task YAML (its scoring functions in the
``utils.py`` beside it, lm-eval's convention) plus a ``distillab:`` block:

- ``extends``: the lm-eval definition it reads (under ``lm_eval/tasks/``), for lm-eval's own tasks;
  a task of distillab's own instead ``include``s another task of the registry and changes its scoring;
- ``data``: where the local copy lives under ``paths.data_dir`` (folder, split files, and settings
  that only hold for the local copy);
- ``primary``: the metric its retention means (an eval config's ``eval.tasks.<task>.primary`` may
  override it);
- ``metrics``: what it reports and which way is better (``higher`` / ``lower``), for lm-eval's own
  tasks; a task with its own ``metric_list`` says so there (``higher_is_better``).

Evaluation (``render``: the YAMLs lm-eval reads, pointed at the local data), retention and the report
(``primary_metric``, ``higher_is_better``), the evaluation cache (``derived_definition``) and the
Makefile's suites (``python -m distillab.evaluation.tasks``) all read it. A new task is one YAML,
plus a function in ``utils.py`` if it scores in a new way.
"""

from __future__ import annotations

import functools
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from distillab.errors import DistillabError

TASK_DIR = Path(__file__).with_name("lm_eval_tasks")
FUNCTIONS_FILE = "utils.py"  # lm-eval resolves ``!function utils.x`` next to the YAML that names it


class FunctionRef(str):
    """An lm-eval ``!function module.name`` value, kept as the tag it is when a YAML is written again."""


class _Loader(yaml.SafeLoader):
    pass


class _Dumper(yaml.SafeDumper):
    pass


_Loader.add_constructor("!function", lambda loader, node: FunctionRef(loader.construct_scalar(node)))
_Dumper.add_representer(FunctionRef, lambda dumper, value: dumper.represent_scalar("!function", str(value)))


@dataclass(frozen=True)
class TaskSpec:
    name: str
    path: Path
    lm_eval: dict[str, Any]  # the YAML without its distillab block
    extends: str | None  # lm-eval's shipped YAML, relative to lm_eval/tasks
    include: str | None  # the registry task this one derives from
    data: dict[str, Any] | None
    primary: str | None
    own_metrics: dict[str, bool]  # metric -> higher is better, as this file states them

    @property
    def uses_functions(self) -> bool:
        return any(isinstance(v, FunctionRef) for v in self.lm_eval.values())


def _read(path: Path) -> TaskSpec:
    try:
        doc = yaml.load(path.read_text(), Loader=_Loader)  # noqa: S506 - SafeLoader plus the !function tag
    except yaml.YAMLError as err:
        raise DistillabError(f"{path}: not a readable task YAML ({str(err).splitlines()[0]})") from None
    own = dict(doc.pop("distillab", None) or {})
    metrics = {m: d == "higher" for m, d in (own.get("metrics") or {}).items()}
    for entry in doc.get("metric_list") or []:
        metrics[entry["metric"]] = bool(entry.get("higher_is_better", True))
    include = doc.get("include")
    return TaskSpec(
        name=doc["task"],
        path=path,
        lm_eval=doc,
        extends=own.get("extends"),
        include=Path(include).stem if include else None,
        data=own.get("data"),
        primary=own.get("primary"),
        own_metrics=metrics,
    )


@functools.cache
def registry() -> dict[str, TaskSpec]:
    """Every task of ``lm_eval_tasks/``, by name."""
    specs = [_read(p) for p in sorted(TASK_DIR.glob("*.yaml"))]
    return {spec.name: spec for spec in specs}


def chain(name: str) -> list[TaskSpec]:
    """``name``'s spec and those it derives from, the base first."""
    specs, spec = [], registry()[name]
    while True:
        specs.insert(0, spec)
        if spec.include is None:
            return specs
        spec = registry()[spec.include]


def metrics(name: str) -> dict[str, bool]:
    """What the task reports, metric -> higher is better (the own ``metric_list`` replaces its base's)."""
    return next((dict(s.own_metrics) for s in reversed(chain(name)) if s.own_metrics), {})


def primary_metric(name: str) -> str | None:
    """The metric the task's retention means, or None for a task the registry does not know."""
    if name not in registry():
        return None
    return next((s.primary for s in reversed(chain(name)) if s.primary), None)


def higher_is_better(name: str, metric: str) -> bool | None:
    """Which way the registry says ``metric`` of task ``name`` is better; None when it does not know."""
    if name not in registry():
        return None
    return metrics(name).get(metric)


def derived_definition(names: list[str]) -> str | None:
    """The files that define distillab's own tasks among ``names`` (their YAML chain and utils.py),
    for cache keys: a cached score must not outlive a change in how it was computed. lm-eval's own
    tasks are covered by lm-eval's version."""
    own = [n for n in names if n in registry() and registry()[n].include is not None]
    if not own:
        return None
    files = {s.path for n in own for s in chain(n)} | {TASK_DIR / FUNCTIONS_FILE}
    return "".join(f"{p.name}\n{p.read_text()}" for p in sorted(files))


def render(names: list[str], data_dir: Path | None, out_dir: Path) -> Path | None:
    """Write the YAMLs lm-eval reads for ``names`` into ``out_dir`` and return it (an lm-eval include
    path), or None when no task needs one.

    With ``data_dir`` every task reads its local copy; without (hub data), lm-eval's own tasks need
    no file, and only distillab's own tasks (and the tasks they include) are written.
    """
    import lm_eval.tasks

    lm_eval_root = Path(lm_eval.tasks.__file__).parent
    specs: dict[str, TaskSpec] = {}
    for name in names:
        if name not in registry() or (data_dir is None and registry()[name].include is None):
            if data_dir is not None:
                raise DistillabError(
                    f"eval.tasks.{name}: no local data layout for this task; valid: {', '.join(registry())} "
                    f"(a new one is a YAML in {TASK_DIR}; or set eval.use_local_data=false to read it from the hub)"
                )
            continue  # lm-eval's own task, read from the hub as lm-eval defines it
        specs |= {s.name: s for s in chain(name)}
    for spec in specs.values():
        doc = dict(spec.lm_eval)
        if spec.extends:
            doc = {"include": str(lm_eval_root / spec.extends), **doc}
        if data_dir is not None and spec.data:
            doc |= _local_data(spec, data_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        text = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=float("inf"))  # never wrap a line
        (out_dir / f"{spec.name}.yaml").write_text(text)
        if spec.uses_functions:
            shutil.copyfile(TASK_DIR / FUNCTIONS_FILE, out_dir / FUNCTIONS_FILE)
    return out_dir if specs else None


def _local_data(spec: TaskSpec, data_dir: Path) -> dict[str, Any]:
    folder = data_dir / spec.data["folder"]
    files = {split: str(folder / name) for split, name in spec.data["splits"].items()}
    missing = [f for f in files.values() if not Path(f).is_file()]
    if missing:
        raise DistillabError(
            f"eval.tasks.{spec.name}: data file {missing[0]} not found (paths.data_dir={data_dir})"
        )
    located = {"dataset_path": "json", "dataset_name": None, "dataset_kwargs": {"data_files": files}}
    return located | dict(spec.data.get("overrides") or {})


def main(argv: list[str]) -> None:
    """``task/primary`` of each named task, or of every task and perplexity set of ``--eval NAME``
    (``conf/eval/NAME.yaml``): the metric lists the Makefile's study targets hand to the report."""
    from omegaconf import OmegaConf

    from distillab.config import CONFIG_DIR
    from distillab.evaluation.retention import primary_metrics

    if argv[:1] == ["--eval"]:
        primary = primary_metrics(
            OmegaConf.to_container(OmegaConf.load(Path(CONFIG_DIR) / "eval" / f"{argv[1]}.yaml"))
        )
    else:
        primary = primary_metrics({"tasks": {name: {} for name in argv}})
    print(" ".join(f"{task}/{metric}" for task, metric in primary.items()))


if __name__ == "__main__":
    main(sys.argv[1:])
