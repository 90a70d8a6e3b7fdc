"""Point lm-eval's own task definitions at the local data directory.

For each task we write a tiny YAML that ``include``s lm-eval's shipped definition (prompt, metrics,
filters unchanged) and overrides only where the data comes from. The generated files keep the
original task names, and lm-eval's ``TaskManager(include_path=...)`` gives them precedence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import lm_eval.tasks
import yaml

from distillab.errors import DistillabError


@dataclass(frozen=True)
class LocalTask:
    definition: str  # lm-eval's YAML, relative to lm_eval/tasks
    folder: str  # data folder under the data directory
    splits: dict[str, str]  # split name -> file in that folder
    overrides: dict = field(default_factory=dict)


LOCAL_TASKS: dict[str, LocalTask] = {
    "arc_challenge": LocalTask(
        "arc/arc_challenge.yaml",
        "arc_challenge",
        {"train": "train.jsonl", "test": "test.jsonl"},
        {"validation_split": None},  # the local copy has no validation split
    ),
    "arc_easy": LocalTask(
        "arc/arc_easy.yaml",
        "arc_easy",
        {"train": "train.jsonl", "validation": "validation.jsonl", "test": "test.jsonl"},
    ),
    "gsm8k": LocalTask("gsm8k/gsm8k.yaml", "gsm8k", {"train": "train.jsonl", "test": "test.jsonl"}),
    "piqa": LocalTask("piqa/piqa.yaml", "piqa", {"validation": "validation.jsonl"}, {"training_split": None}),
    "hellaswag": LocalTask(
        "hellaswag/hellaswag.yaml", "hellaswag", {"validation": "validation.jsonl"}, {"training_split": None}
    ),
    "lambada_openai": LocalTask("lambada/lambada_openai.yaml", "lambada_openai", {"test": "test.jsonl"}),
}


def write_local_task_yamls(task_names: list[str], data_dir: Path, out_dir: Path) -> Path:
    """Write one override YAML per task into ``out_dir`` and return it (an lm-eval include path)."""
    tasks_root = Path(lm_eval.tasks.__file__).parent
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in task_names:
        if name not in LOCAL_TASKS:
            raise DistillabError(
                f"eval.tasks.{name}: no local data layout for this task; valid: {', '.join(LOCAL_TASKS)} "
                "(or set eval.use_local_data=false to read it from the hub)"
            )
        spec = LOCAL_TASKS[name]
        files = {split: str(data_dir / spec.folder / fname) for split, fname in spec.splits.items()}
        missing = [f for f in files.values() if not Path(f).is_file()]
        if missing:
            raise DistillabError(
                f"eval.tasks.{name}: data file {missing[0]} not found (paths.data_dir={data_dir})"
            )
        doc = {
            "include": str(tasks_root / spec.definition),
            "task": name,
            "dataset_path": "json",
            "dataset_name": None,
            "dataset_kwargs": {"data_files": files},
            **spec.overrides,
        }
        (out_dir / f"{name}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return out_dir
