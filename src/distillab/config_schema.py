"""One typed schema for every app's config: types and ranges checked before any model loads.

Per-key checks scattered through the code cannot keep up with the keys (``optimizer.lr=fast`` used to
end in a ``TypeError`` deep inside the optimizer; ``trainer.max_steps=0`` trained nothing and then
exported the untouched student as healed). Each rule below names a key (``*`` stands for any one
key part: every task, term or perplexity set) with its type and range; :func:`check_schema` walks
the composed config and fails with one line naming the key, the value and what would be valid.
Keys a rule does not name pass through (groups built by ``_target_`` are checked when built).

Why a table and not Hydra structured configs: the configs are plain YAML groups that users copy and
override with ``+key=...``; a dataclass per group would duplicate every default and make an unknown
``+key`` an OmegaConf error far from its meaning. The table holds only what can be wrong.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from distillab.errors import DistillabError


@dataclass(frozen=True)
class Rule:
    kind: type  # int, float (ints accepted), bool, str, or list (of integers)
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low < value instead of low <= value
    high_open: bool = False
    nullable: bool = False
    choices: tuple[str, ...] = ()
    pattern: str = ""  # a str must match this regular expression whole; `form` says it to the user
    form: str = ""
    meaning: str = ""  # what the key is, for the message

    def expected(self) -> str:
        if self.choices:
            text = "one of " + ", ".join(self.choices)
        elif self.pattern:
            text = f"a string {self.form}"
        else:
            text = {
                int: "an integer",
                float: "a number",
                bool: "true or false",
                str: "a string",
                list: "a list of integers, e.g. [13,14]",
            }[self.kind]
            if self.low is not None:
                text += f" {'>' if self.low_open else '>='} {self.low:g}"
            if self.high is not None:
                text += f"{' and' if self.low is not None else ''} {'<' if self.high_open else '<='} {self.high:g}"
        return text + (" or null" if self.nullable else "")

    def violation(self, value: Any) -> bool:
        if value is None:
            return not self.nullable
        if self.kind is list:
            return not isinstance(value, list) or any(
                isinstance(v, bool) or not isinstance(v, int) for v in value
            )
        if self.kind is bool:
            return not isinstance(value, bool)
        if self.kind is str:
            if isinstance(value, bool) and {"true", "false"} <= set(self.choices):
                value = str(value).lower()  # YAML reads the choices true/false as booleans
            if not isinstance(value, str):
                return True
            if self.pattern and not re.fullmatch(self.pattern, value):
                return True
            return bool(self.choices and value not in self.choices)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return True
        if self.kind is int and not isinstance(value, int):
            return True
        if isinstance(value, float) and not math.isfinite(value):
            return True
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return True
        return self.high is not None and (value >= self.high if self.high_open else value > self.high)


def _positive_int(meaning: str = "", nullable: bool = False) -> Rule:
    return Rule(int, low=1, nullable=nullable, meaning=meaning)


_STEPS = "training steps (0 would train nothing and report the untouched student as trained)"
# Lightning's own string form of a wall-clock budget (it also takes a dict or a timedelta from code)
_MAX_TIME = Rule(
    str,
    nullable=True,
    pattern=r"(?!00:00:00:00)\d{2}:\d{2}:\d{2}:\d{2}",  # zero would train nothing (Lightning stops before step 1)
    form="DD:HH:MM:SS, not zero, e.g. 00:01:00:00 for one hour",
    meaning="wall-clock training budget; training stops at max_steps or here, whichever comes first",
)
_NO_TENSOR_PARALLEL = "trainer=fsdp shards data-parallel only; no tensor-parallel plan is applied"

RULES: dict[str, Rule] = {
    # the process
    "seed": Rule(int),
    "threads": _positive_int("torch intra-op threads; null: torch's default (all cores)", nullable=True),
    "allocator": Rule(str, choices=("reuse", "release", "glibc")),
    "precision": Rule(str, choices=("auto", "bf16", "float32")),
    # training
    "trainer.max_steps": _positive_int(_STEPS),
    "heal.trainer.max_steps": _positive_int(_STEPS),
    "trainer.max_time": _MAX_TIME,
    "heal.trainer.max_time": _MAX_TIME,
    "*.accumulate_grad_batches": _positive_int(),
    "trainer.gradient_clip_val": Rule(float, low=0, nullable=True),
    "trainer.limit_val_batches": Rule(float, low=0, nullable=True),
    "trainer.log_every_n_steps": _positive_int(),
    # trainer=fsdp shards over data-parallel ranks only: a tensor-parallel size would be ignored
    "trainer.strategy.tensor_parallel_size": Rule(int, low=1, high=1, meaning=_NO_TENSOR_PARALLEL),
    "heal.trainer.strategy.tensor_parallel_size": Rule(int, low=1, high=1, meaning=_NO_TENSOR_PARALLEL),
    "optimizer.lr": Rule(float, low=0, low_open=True, meaning="learning rate"),
    "optimizer.weight_decay": Rule(float, low=0),
    "heal.optimizer.lr": Rule(float, low=0, low_open=True, meaning="learning rate"),
    # data
    "data.block_size": Rule(int, low=2, meaning="tokens per training block"),
    "*.data.block_size": Rule(int, low=2, meaning="tokens per block"),
    "data.batch_size": _positive_int(),
    "data.val_fraction": Rule(float, low=0, high=1, high_open=True),
    "data.max_documents": _positive_int(nullable=True),
    "data.max_train_blocks": _positive_int(nullable=True),
    "data.max_val_blocks": _positive_int(nullable=True),
    "calibration.num_blocks": _positive_int(),
    # the objective
    "objective.terms.*.weight": Rule(float, low=0),
    "objective.terms.*.temperature": Rule(float, low=0, low_open=True),
    "objective.terms.*.chunk_tokens": _positive_int(),
    "objective.terms.*.top_k": _positive_int("ranks compared exactly; null: all", nullable=True),
    "objective.terms.*.shared_weight": Rule(float, low=0),
    "objective.terms.*.unshared_weight": Rule(float, low=0),
    "objective.alpha": Rule(float, low=0, high=1),
    "on_policy.fraction": Rule(float, low=0, high=1, meaning="GKD's lambda"),
    "on_policy.prompt_tokens": _positive_int(),
    "on_policy.new_tokens": _positive_int(),
    "on_policy.temperature": Rule(float, low=0, low_open=True),
    "teacher_cache.k": _positive_int(),
    "student.num_remove": _positive_int(nullable=True),
    "student.remove": Rule(list, nullable=True, meaning="teacher layer indices to remove"),
    "student.calibration_blocks": _positive_int(),
    # evaluation
    "eval.batch_size": _positive_int(),
    "eval.max_length": _positive_int(),
    "eval.tasks.*.limit": _positive_int("items scored (null: the whole split)", nullable=True),
    "eval.tasks.*.num_fewshot": Rule(int, low=0, meaning="few-shot examples before each item; 0: zero-shot"),
    "eval.tasks.*.primary": Rule(
        str, nullable=True, meaning="the metric the task's retention means (null: the task's default)"
    ),
    "eval.perplexity.*.block_size": Rule(int, low=2, meaning="tokens per scored block"),
    "eval.perplexity.*.max_tokens": _positive_int("tokens scored from the start (null: all)", nullable=True),
    "eval.perplexity.*.source.format": Rule(
        str, choices=("jsonl", "text", "hub"), meaning="how the text is read (data/corpus.py)"
    ),
    # pruning
    "prune.layers.num_remove": _positive_int(),
    "prune.layers.per_step": _positive_int(),
    "prune.layers.contiguous": Rule(bool),
    "prune.layers.protect": Rule(list, meaning="original layer indices never removed"),
    "prune.layers.lens_stride": _positive_int(),
    "prune.unstructured.sparsity": Rule(float, low=0, high=1, high_open=True),
    "prune.layers.removal.num_batches": _positive_int(),
    "prune.layers.removal.limit": _positive_int(
        "items scored per measurement (null: the whole split)", nullable=True
    ),
    "prune.layers.removal.num_fewshot": Rule(int, low=0),
    "prune.width.*": _positive_int("the new width; null: unchanged", nullable=True),
    "quantize.bits": Rule(int),
    "quantize.score_in_llama_cpp": Rule(
        str, choices=("auto", "true", "false"), meaning="also score the GGUF in llama.cpp"
    ),
    "quantize.group_size": _positive_int(),
    "speed.new_tokens": _positive_int("tokens generated per timed decode"),
    "speed.compile": Rule(str, choices=("auto", "true", "false"), meaning="torch.compile: compiling.py"),
    "quantize_aware.format": Rule(  # its values: fake_quant.check_format (llama.cpp's list lives above this layer)
        str,
        meaning="q8_0 | q4_0 | q4_1 | a llama.cpp type such as q4_k_m: quantization/fake_quant.py",
    ),
    "quantize_aware.refresh_every": _positive_int(
        "optimizer steps between llama.cpp's scale searches in a K-quant mix; between them, the weights "
        "are re-rounded onto the scales last chosen (1: a search every step)"
    ),
    "prune.layers.replace": Rule(
        str, choices=("linear", "streamline"), nullable=True, meaning="what stands in for the removed block"
    ),
    "prune.layers.streamline.steps": _positive_int("Adam steps fitting the replacement layer"),
    "prune.layers.streamline.lr": Rule(float, low=0, low_open=True, meaning="learning rate"),
    "tuning.rank": _positive_int("LoRA rank: training/tuning.py"),
    "tuning.alpha": Rule(float, low=0, low_open=True, meaning="LoRA scale alpha / rank"),
    "tuning.dropout": Rule(float, low=0, high=1, high_open=True, meaning="dropout on the adapters' input"),
    "tuning.num_layers": _positive_int("last decoder layers that train"),
    "scheduler.num_warmup_steps": Rule(int, low=0),
    "teacher_cache.temperature": Rule(float, low=0, low_open=True),
    "teacher_cache.batch_size": _positive_int(),
    "teacher_cache.shard_blocks": _positive_int(),
    "objective.terms.*.num_pairs": _positive_int(),
    "objective.terms.*.token_fraction": Rule(float, low=0, high=1, low_open=True),
    "objective.terms.*.beta": Rule(float, low=0, high=1),
    "objective.terms.*.regenerate_every": _positive_int(),
    "objective.terms.*.num_prompts": _positive_int(),
    "objective.terms.*.max_new_tokens": _positive_int(),
    "generation.max_new_tokens": _positive_int(),
    "generation.temperature": Rule(float, low=0, low_open=True),
    "generation.top_p": Rule(float, low=0, high=1, low_open=True),
    "generation.batch_size": _positive_int(),
    "generation.seed": Rule(int),
    "max_prompts": _positive_int("prompts answered (null: all)", nullable=True),
    "callbacks.checkpoint.every_n_train_steps": _positive_int(),
    "heal.checkpoint_every": _positive_int(
        "healing steps between resumable checkpoints; null: none", nullable=True
    ),
    # switches: any other value (maybe, yes) would be read as true and run something not asked for
    **{
        key: Rule(bool)
        for key in (
            "export",
            "eval_before_training",
            "quantize_last",
            "heal.enabled",
            "heal.only_layers_next_to_gaps",
            "teacher_cache.enabled",
            "eval.use_local_data",
            "prune.layers.eval_each_step",
            "generation.do_sample",
            "objective.terms.*.apply_norm",
            "*.trust_remote_code",
            "*.deterministic",
        )
    },
}


def _leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, f"{prefix}.{key}" if prefix else str(key))
    else:  # a list is one value (its rule, if any, checks the elements)
        yield prefix, node


# Groups mounted a second time under another key (prune's healing: heal.data, heal.objective, ...;
# its calibration data: calibration.data) obey the same rules there as at the top.
MOUNTS = ("heal.", "calibration.")


def rules_for(key: str) -> Iterator[Rule]:
    """The rules whose pattern names ``key`` (the schema check; the configuration reference), also
    through a mount point (``heal.data.batch_size`` obeys ``data.batch_size``'s rule)."""
    keys = [key] + [key.removeprefix(m) for m in MOUNTS if key.startswith(m)]
    return (
        rule
        for pattern, rule in RULES.items()
        if any(fnmatch.fnmatchcase(k, pattern) and _same_depth(k, pattern) for k in keys)
    )


# Lightning Trainer arguments that training/fit.py passes itself: set in a trainer block they would
# be overridden without a word, so they are refused with the key that does the job instead.
SET_BY_DISTILLAB = {
    "logger": "the loggers come from the logger group: logger=wandb or logger=csv",
    "callbacks": "add a callback as +callbacks.<name>={_target_: ...}",
    "default_root_dir": "the run folder is paths.run_dir (hydra.run.dir=... on the command line)",
    "enable_checkpointing": "checkpoints are callbacks.checkpoint (distill) and heal.checkpoint_every (prune)",
    "plugins": "distillab writes checkpoints through its own atomic plugin; precision is precision=...",
}


def check_schema(cfg: DictConfig) -> None:
    """Raise :class:`DistillabError` for the first value that breaks a rule (hydra's own block aside),
    or a trainer argument distillab sets itself (:data:`SET_BY_DISTILLAB`)."""
    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # an interpolation that cannot resolve here is reported where it is read
        plain = OmegaConf.to_container(cfg, resolve=False)
    plain.pop("hydra", None)
    for block in ("trainer", "heal.trainer"):
        trainer = OmegaConf.select(cfg, block, default=None)
        set_here = [k for k in SET_BY_DISTILLAB if k in (trainer or {})]
        if set_here:
            key = set_here[0]
            raise DistillabError(
                f"{block}.{key}: set by distillab, not from the config; {SET_BY_DISTILLAB[key]}"
            )
    for key, value in _leaves(plain):
        for rule in rules_for(key):
            if rule.violation(value):
                meaning = f" ({rule.meaning})" if rule.meaning else ""
                raise DistillabError(f"{key}: {value!r} is not valid; expected {rule.expected()}{meaning}")


def _same_depth(key: str, pattern: str) -> bool:
    """``*`` stands for one key part only (fnmatch's ``*`` would also cross dots)."""
    return key.count(".") == pattern.count(".")
