"""Point lm-eval's own task definitions at the local data directory.

For each task we write a tiny YAML that ``include``s lm-eval's shipped definition (prompt, metrics,
filters unchanged) and overrides only where the data comes from. The generated files keep the
original task names, and lm-eval's ``TaskManager(include_path=...)`` gives them precedence.
"""

from __future__ import annotations

import json
import re
import shutil
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


_MEAN = {"aggregation": "mean"}
# distillab's continuous variants (evaluation/lm_eval_functions.py): lm-eval's own task, the same
# items and prompts, other scoring. name -> (the task it derives from, what changes).
DERIVED_TASKS: dict[str, tuple[str, dict]] = {
    f"{arc}_margin": (
        arc,
        {
            "tag": None,  # not a member of ai2_arc: asking for that tag must not run the variants
            "process_results": "!function distillab_functions.arc_choice_results",
            "metric_list": [
                {"metric": "acc", **_MEAN, "higher_is_better": True},
                {"metric": "acc_norm", **_MEAN, "higher_is_better": True},
                {"metric": "choice_nll", **_MEAN, "higher_is_better": False},
            ],
        },
    )
    for arc in ("arc_challenge", "arc_easy")
}
DERIVED_TASKS["gsm8k_bpb"] = (
    "gsm8k",
    {
        "tag": None,
        "output_type": "loglikelihood",  # the reference solution's likelihood, nothing generated
        # A loglikelihood request scores doc_to_target as it is (no delimiter), few-shot examples
        # join text + target_delimiter + target: so the space moves into the target, and both read
        # "Answer: <solution>". The continuation " " + answer is what gsm8k_bpb_results counts.
        "doc_to_target": " {{answer}}",
        "target_delimiter": "",
        "process_results": "!function distillab_functions.gsm8k_bpb_results",
        "metric_list": [{"metric": "bpb", **_MEAN, "higher_is_better": False}],
        "filter_list": None,
        "generation_kwargs": None,
    },
)
FUNCTIONS_FILE = "distillab_functions.py"  # lm-eval resolves !function next to the YAML
FUNCTIONS_SOURCE = Path(__file__).with_name("lm_eval_functions.py")


def derived_definition(task_names: list[str]) -> str | None:
    """What defines the derived tasks among ``task_names`` (their specs and the scoring code), for
    cache keys: a cached teacher score must not outlive a change in how it was computed."""
    used = {n: DERIVED_TASKS[n] for n in task_names if n in DERIVED_TASKS}
    if not used:
        return None
    return json.dumps(used, sort_keys=True, default=str) + FUNCTIONS_SOURCE.read_text()


def write_local_task_yamls(task_names: list[str], data_dir: Path | None, out_dir: Path) -> Path | None:
    """Write one YAML per task into ``out_dir`` and return it (an lm-eval include path), or None
    when no task needs one.

    With ``data_dir`` every task reads its local copy; without (hub data), only distillab's derived
    tasks (``DERIVED_TASKS``) need a file, since lm-eval does not know their names.
    """
    tasks_root = Path(lm_eval.tasks.__file__).parent
    written = False
    for name in task_names:
        base, changes = DERIVED_TASKS.get(name, (name, {}))
        if data_dir is None and not changes:
            continue  # lm-eval's own task, read from the hub as lm-eval defines it
        if base not in LOCAL_TASKS:
            raise DistillabError(
                f"eval.tasks.{name}: no local data layout for this task; valid: "
                f"{', '.join([*LOCAL_TASKS, *DERIVED_TASKS])} (or set eval.use_local_data=false to read it from the hub)"
            )
        spec = LOCAL_TASKS[base]
        doc = {"include": str(tasks_root / spec.definition), "task": name}
        if data_dir is not None:
            files = {split: str(data_dir / spec.folder / fname) for split, fname in spec.splits.items()}
            missing = [f for f in files.values() if not Path(f).is_file()]
            if missing:
                raise DistillabError(
                    f"eval.tasks.{name}: data file {missing[0]} not found (paths.data_dir={data_dir})"
                )
            doc |= {"dataset_path": "json", "dataset_name": None, "dataset_kwargs": {"data_files": files}}
            doc |= spec.overrides
        doc |= changes
        out_dir.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump(doc, sort_keys=False, width=float("inf"))  # never wrap a line
        # safe_dump quotes the tag; lm-eval needs it as a tag to load the function
        text, tags = re.subn(r"'!function ([\w.]+)'", r"!function \1", text)
        if tags != sum(
            "process_results" in k for k in changes
        ):  # a silently plain string would drop the metric
            raise RuntimeError(f"{name}: the !function tag was not written as a tag")
        (out_dir / f"{name}.yaml").write_text(text)
        if changes:
            shutil.copyfile(FUNCTIONS_SOURCE, out_dir / FUNCTIONS_FILE)
        written = True
    return out_dir if written else None
