"""``distillab-pipeline``: distill -> prune -> heal -> quantize, each stage cached, one size x quality table.

Thin entry point: ``main`` is Hydra's; ``run(cfg)`` does the work and returns the per-stage rows.
Every stage is one of the ordinary apps (``distill.run``, ``prune.run``, ``quantize.run``) on a
config composed from its own YAML plus the stage's overrides; the pipeline wires inputs and outputs
and sets what every row of the table must share (eval suite, logger, paths, threads, speed probe),
so anything else an app can do, a stage can.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any

import hydra
from hydra.errors import HydraException
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from distillab import cost
from distillab.config import resolve_run_precision, to_plain
from distillab.entry import app_boundary, hydra_app, start_run
from distillab.errors import DistillabError
from distillab.evaluation.footprint import bytes_on_disk, decode_tokens_per_second
from distillab.evaluation.items import write_suite
from distillab.evaluation.retention import primary_metrics
from distillab.evaluation.suite import cached_evaluate_suite
from distillab.files import read_json, write_text_atomic
from distillab.models.loading import load_from_config, load_model
from distillab.models.spec import ModelSpec
from distillab.precision import current as current_precision
from distillab.quantization.backends import GGUF, build_backend
from distillab.redaction import redact
from distillab.stage_cache import (
    fingerprint,
    finished_record,
    locate,
    mark_finished,
    model_identity,
)
from distillab.tracking.stage_table import log_stage_table, stage_items, stage_row, write_stage_table
from distillab.versions import library_versions, version_drift

log = logging.getLogger("distillab")

# A stage's app names its config (conf/<app>.yaml) and its code (distillab.<app>.run): one name for both.
STAGE_APPS = ("distill", "prune", "quantize")


def app_run(app: str) -> Callable[[DictConfig], dict[str, Any]]:
    """``distillab.<app>.run``, the function the app's console script runs."""
    return import_module(f"distillab.{app}").run


# Set once for the whole pipeline so every row of the table is measured the same way.
PIPELINE_WIDE = ("eval", "logger", "paths", "threads", "precision", "experiment_name", "task_name", "speed")
# Keys under those that are each stage's own: how a stage trains, not how the table measures.
PER_STAGE = ("speed.compile",)
# Wired by the pipeline: each stage's input model and its reference.
WIRED = ("model", "teacher")


@dataclass
class Stage:
    name: str
    app: str
    cfg: DictConfig
    fingerprint: str
    dir: Path


def compose_stage(name: str, spec: DictConfig, cfg: DictConfig) -> DictConfig:
    """The app's own config + the stage's overrides + what the pipeline shares (paths, eval, logger)."""
    app = spec.get("app")
    if app not in STAGE_APPS:
        raise DistillabError(f"stages.{name}.app: unknown {app!r}; valid: {', '.join(STAGE_APPS)}")
    overrides = list(spec.get("overrides") or [])
    for override in overrides:
        path = str(override).lstrip("+~").split("=", 1)[0]
        key = path.split(".", 1)[0]
        if key.split("@")[0] in WIRED or key.endswith("@teacher"):
            raise DistillabError(
                f"stages.{name}.overrides: {override!r} sets the stage's {key}, which the pipeline wires "
                "(each stage reads the previous one's output); set model or model@teacher at the top level"
            )
        if key in PIPELINE_WIDE and path not in PER_STAGE:
            raise DistillabError(
                f"stages.{name}.overrides: {override!r} sets {key}, which the pipeline sets for every stage "
                f"(one table compares the stages); set it at the top level: distillab-pipeline {key}=..."
            )
    try:
        stage_cfg = hydra.compose(config_name=app, overrides=overrides)
    except (HydraException, OmegaConfBaseException, ValueError) as err:
        first = str(err).strip().splitlines()[0]
        raise DistillabError(f"stages.{name}.overrides: {first}") from None
    with open_dict(stage_cfg):
        stage_cfg.experiment_name = cfg.experiment_name
        stage_cfg.task_name = name  # W&B job_type: one job type per stage, the pipeline is the group
        stage_cfg.threads = cfg.threads
        stage_cfg.precision = cfg.precision  # the setting; each stage resolves it for its own device
        stage_cfg.paths.run_dir = "pending"  # set once the fingerprint is known (plan_stages)
        for key in ("data_dir", "cache_dir", "output_dir"):
            stage_cfg.paths[key] = cfg.paths[key]
        stage_cfg.eval = OmegaConf.create(to_plain(cfg.eval))
        stage_cfg.logger = OmegaConf.create(OmegaConf.to_container(cfg.logger, resolve=False))
        if app == "quantize":  # tokens/s measured the same way for every row of the table
            stage_cfg.speed = OmegaConf.create(to_plain(cfg.speed))
    return stage_cfg


def wire_input(stage_cfg: DictConfig, app: str, source: dict[str, Any], reference: dict[str, Any]) -> None:
    """Every stage reads its input from ``model`` (the previous stage's output). Distill and quantize
    stages also get the pipeline's reference as ``teacher`` (none while the input is the reference
    itself); a prune stage heals against its own input."""
    with open_dict(stage_cfg):
        stage_cfg.model = source
        if app != "prune":
            stage_cfg.teacher = None if source == reference else reference


def reference_of(cfg: DictConfig) -> dict[str, Any]:
    """The pipeline's reference model: ``teacher`` if given, else the input ``model``."""
    return to_plain(cfg.teacher) if cfg.get("teacher") else to_plain(cfg.model)


def plan_stages(cfg: DictConfig, run_dir: Path) -> list[Stage]:
    """Compose and fingerprint every stage before any runs: config mistakes cost no compute."""
    model, teacher = to_plain(cfg.model), reference_of(cfg)
    ModelSpec.from_config(teacher, key="teacher" if cfg.get("teacher") else "model")
    ModelSpec.from_config(model, key="model")
    enabled = [(n, s) for n, s in (cfg.stages or {}).items() if s is not None]
    if not enabled:
        raise DistillabError("stages: every stage is null; enable at least one of distill, prune, quantize")
    for other in cfg.get("reuse_stages_from") or []:
        if not Path(str(other)).is_dir():
            raise DistillabError(f"reuse_stages_from: {other} is not a directory (a pipeline run directory)")
    stages, source = [], teacher if model == teacher else model  # `is teacher` marks "the reference"
    teacher_identity = model_identity(teacher)  # hashes the teacher's files once per plan
    upstream = fingerprint(teacher_identity if source is teacher else model_identity(model), "")
    for index, (name, spec) in enumerate(enabled, start=1):
        if stages and stages[-1].app == "quantize":
            if cfg.get("quantize_last", True):
                raise DistillabError(
                    f"stages.{name}: comes after quantize; quantization must be the last stage "
                    "(quantize_last=false allows it, for ordering studies)"
                )
            if source is None:  # the quantize stage before wrote no GGUF file
                raise DistillabError(
                    f"stages.{name}: follows a torchao quantize stage; only a GGUF output can be an input"
                )
        stage_cfg = compose_stage(name, spec, cfg)
        wire_input(stage_cfg, spec.app, source, teacher)
        if spec.app != "quantize" and not stage_cfg.get("export", True):
            raise DistillabError(
                f"stages.{name}.overrides: export=false; a stage before quantize must export its model"
            )
        if spec.app == "quantize":
            backend = build_backend(stage_cfg.quantize)  # checked now: a mistake costs no compute
        elif spec.app == "prune":
            try:  # the method's class exists (its settings are checked against the model when it runs)
                get_class(stage_cfg.prune._target_)
            except Exception:
                raise DistillabError(
                    f"stages.{name}.overrides: prune._target_ {stage_cfg.prune._target_!r} is not a class"
                ) from None
        identity = portable(to_plain(stage_cfg), source, teacher, teacher_identity)
        # What `auto` resolves to on this machine enters the fingerprint: a stage computed in float32
        # is never reused as a bf16 one (or back).
        identity["precision_used"] = resolve_run_precision(stage_cfg).name
        upstream = fingerprint(identity, upstream)
        stage_dir = locate(run_dir / f"{index:02d}-{name}-{upstream}", cfg.get("reuse_stages_from") or [])
        with open_dict(stage_cfg):
            stage_cfg.paths.run_dir = str(stage_dir)
        stages.append(Stage(name, spec.app, stage_cfg, upstream, stage_dir))
        # the next stage's input: this stage's exported model (a placeholder path until it has run);
        # after a GGUF quantize stage, its file, de-quantized on load (quantize_last=false only)
        if spec.app == "quantize":
            gguf = isinstance(backend, GGUF)
            source = {"name_or_path": str(stage_dir), "gguf_file": backend.artifact_name()} if gguf else None
        else:
            source = {"name_or_path": str(stage_dir / "student"), "dtype": "float32"}
    return stages


def portable(
    stage_cfg: dict[str, Any],
    source: dict[str, Any],
    teacher: dict[str, Any],
    teacher_identity: dict[str, Any],
) -> dict[str, Any]:
    """The stage config with its input models replaced by stand-ins: the upstream fingerprint already
    identifies the input, and absolute paths (home, cache or output directory) must not change it."""

    def swap(node: Any) -> Any:
        if node == source and source is not teacher:
            return "<upstream stage output>"
        if node == teacher:
            return teacher_identity
        if isinstance(node, dict):
            return {k: swap(v) for k, v in node.items()}
        return node

    return swap(stage_cfg)


def stage_output(app: str, results: dict[str, Any]) -> dict[str, Any]:
    if app == "quantize":
        artifact = Path(results["artifact"])
        if artifact.suffix == ".gguf":
            return {"name_or_path": str(artifact.parent), "gguf_file": artifact.name}
        return {"name_or_path": str(artifact)}
    return {"name_or_path": results["student_dir"], "dtype": "float32"}


def measure_speed(output: dict[str, Any], prompt: str, new_tokens: int) -> float:
    model, tokenizer = load_model(ModelSpec.from_config(output))
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    return decode_tokens_per_second(model, ids, new_tokens)


def save_stage_config(stage: Stage) -> None:
    """The stage's composed config (secrets redacted) next to its outputs: what exactly ran."""
    import yaml

    stage.dir.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(redact(to_plain(stage.cfg)), sort_keys=False)
    write_text_atomic(stage.dir / "stage_config.yaml", text)


def resume_training(stage: Stage) -> None:
    """A distill stage that stopped before finishing (a kill, a crash after training) resumes from
    its ``last.ckpt``, as ``distillab-distill ckpt_path=last`` would: the folder is the stage's
    fingerprint, so the checkpoint is of this very stage (``fit`` also checks it fits the model)."""
    checkpoint = stage.dir / "checkpoints" / "last.ckpt"
    if stage.app == "distill" and checkpoint.is_file() and stage.cfg.get("ckpt_path") is None:
        log.info("stage %s: resuming its training from %s", stage.name, checkpoint)
        with open_dict(stage.cfg):
            stage.cfg.ckpt_path = "last"


def run_stage(stage: Stage, cfg: DictConfig) -> dict[str, Any]:
    """Run (or reuse) one stage; returns its record (fingerprint, output, results, speed)."""
    record = finished_record(stage.dir)
    if record is not None and record.get("fingerprint") == stage.fingerprint:
        log.info("stage %s: reusing %s (fingerprint %s)", stage.name, stage.dir, stage.fingerprint)
        warn_on_version_drift(stage.name, stage.dir, record)
        return record
    log.info("stage %s: running %s -> %s", stage.name, stage.app, stage.dir)
    start = time.time()
    resume_training(stage)
    save_stage_config(stage)
    results = app_run(stage.app)(stage.cfg)
    output = stage_output(stage.app, results)
    speed = results.get("tokens_per_s") or measure_speed(output, cfg.speed.prompt, int(cfg.speed.new_tokens))
    path = Path(output["name_or_path"]) / output.get("gguf_file", "")
    record = {
        "name": stage.name,
        "app": stage.app,
        "fingerprint": stage.fingerprint,
        "output": output,
        "bytes": bytes_on_disk(path),
        "params": results["params"]["student"],
        "tokens_per_s": speed,
        "runtime": results.get("runtime", f"transformers ({current_precision().name})"),
        "metrics": results.get("student", {}),
        "items_dir": str(Path(results["run_dir"]) / "items" / "student") if results.get("run_dir") else None,
        "wall_seconds": time.time() - start,
        "cost": results.get("cost"),  # the stage's own ledger (cost.py); rows get the sum up to them
        "versions": library_versions(),
    }
    mark_finished(stage.dir, record)
    return record


def with_cumulative_cost(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each stage's record with ``cost``: what its model cost, i.e. the ledgers of every stage up to
    and including it (the stage's own ledger stays in its results.json)."""
    return [
        {**r, "cost": cost.combined([x.get("cost") for x in records[: i + 1]])} for i, r in enumerate(records)
    ]


def with_llama_cpp_score(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The stage's record, and for a quantize stage that also scored its file in llama.cpp
    (``quantize.score_in_llama_cpp``) a second row with that score, ``<stage> (llama.cpp)``: the same
    file, its metrics and per-item results from the runtime users run it in."""
    items = record.get("items_dir")
    results_file = Path(items).parent.parent / "results.json" if items else None
    if results_file is None or not results_file.is_file():
        return [record]
    results = read_json(results_file, "re-run the pipeline (finished stages are reused)")
    if not results.get("student_llama_cpp"):
        return [record]
    llama = {
        **record,
        "name": f"{record['name']} (llama.cpp)",
        "scored_in": "llama.cpp",  # (its "runtime" is what measured the decode speed, as in every row)
        "metrics": results["student_llama_cpp"],
        "items_dir": str(results_file.parent / "items" / "student_llama_cpp"),
    }
    return [record, llama]


def warn_on_version_drift(name: str, stage_dir: Path, record: dict[str, Any]) -> None:
    drift = version_drift(record)
    if drift:
        log.warning(
            "stage %s: reusing %s, computed with other library versions (%s); delete it to recompute",
            name,
            stage_dir,
            ", ".join(drift),
        )


def teacher_record(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """The reference's row (``teacher``, else the input model), measured once per model + eval
    settings (stage-cached too)."""
    spec = reference_of(cfg)
    identity = {
        "teacher": model_identity(spec),
        "eval": to_plain(cfg.eval),
        "speed": to_plain(cfg.speed),
        "data_dir": str(cfg.paths.data_dir),  # not run_dir/cache_dir: arms of a study share it
    }
    used = current_precision().on("cpu")  # the teacher row is measured on the CPU
    if used.is_bf16:  # only then, so float32 teacher rows computed before keep their keys
        identity["precision"] = used.name
    key = fingerprint(identity, "")
    stage_dir = locate(run_dir / f"00-teacher-{key}", cfg.get("reuse_stages_from") or [])
    record = finished_record(stage_dir)
    if record is not None:
        warn_on_version_drift("teacher", stage_dir, record)
        return record
    model, tokenizer = load_from_config(cfg, "teacher" if cfg.get("teacher") else "model")
    evaluation, _ = cached_evaluate_suite(
        model, tokenizer, cfg.eval, stage_dir, cfg.paths.data_dir, Path(cfg.paths.cache_dir)
    )
    metrics = evaluation.metrics
    write_suite(stage_dir / "items" / "teacher", evaluation.items)
    path = Path(spec["name_or_path"])
    ids = tokenizer(cfg.speed.prompt, return_tensors="pt").input_ids
    record = {
        "name": "teacher",
        "app": None,
        "fingerprint": key,
        "output": spec,
        "bytes": bytes_on_disk(path / spec["gguf_file"] if spec.get("gguf_file") else path)
        if path.exists()
        else None,
        "params": model.num_parameters(),
        "tokens_per_s": decode_tokens_per_second(model, ids, int(cfg.speed.new_tokens)),
        "runtime": f"transformers ({used.name})",
        "metrics": metrics,
        "items_dir": str(stage_dir / "items" / "teacher"),
        "versions": library_versions(),
    }
    mark_finished(stage_dir, record)
    return record


@app_boundary
def run(cfg: DictConfig) -> dict[str, Any]:
    run_dir = start_run(cfg)
    stages = plan_stages(cfg, run_dir)
    teacher = teacher_record(cfg, run_dir)
    finished = [run_stage(stage, cfg) for stage in stages]
    records = [row for record in with_cumulative_cost(finished) for row in with_llama_cpp_score(record)]
    primary = primary_metrics(cfg.eval)
    teacher_items = stage_items(teacher)  # read once: every row is scored against it
    rows = [stage_row(r, teacher, primary, teacher_items) for r in [teacher, *records]]
    markdown = write_stage_table(run_dir, rows, f"## pipeline {cfg.experiment_name}")
    print("\n" + markdown)
    log_stage_table(cfg, rows, run_dir)
    print(f"run directory: {run_dir}")
    return {"run_dir": str(run_dir), "rows": rows}


main = hydra_app("pipeline", run)


if __name__ == "__main__":
    main()
