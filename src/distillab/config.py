"""Hydra/OmegaConf glue shared by every entry point: config path, resolvers, error handling."""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import logging
import re
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from distillab.errors import DistillabError
from distillab.files import write_json_atomic, write_text_atomic
from distillab.precision import Precision, device_type_for, resolve_precision, use

# Third-party deprecation chatter that the user cannot act on.
warnings.filterwarnings("ignore", message=".*LeafSpec.*")
warnings.filterwarnings("ignore", message=".*anonymous setting has no effect.*")

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")

# `${one_minus:${..alpha}}`: hard-label weight as 1 - alpha, so one knob sets both KD weights.
if not OmegaConf.has_resolver("one_minus"):
    OmegaConf.register_new_resolver("one_minus", lambda x: 1.0 - float(x))


def to_plain(cfg: DictConfig | dict | None) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg or {})


def set_threads(threads: int | None) -> None:
    """Intra-op threads. On 2 cores, one busy process per core beats oversubscription."""
    if threads:
        torch.set_num_threads(int(threads))


_M_MMAP_THRESHOLD = -3  # mallopt parameter number, from glibc's malloc.h


def set_malloc_mmap_threshold(megabytes: float | None) -> None:
    """Serve CPU allocations of at least ``megabytes`` with mmap, so freeing one returns it to the OS.

    glibc raises its mmap threshold after every large free (up to 32 MB), after which big
    short-lived tensors (attention maps, vocabulary-sized chunks) come from the heap and stay
    resident once freed: peak RSS then grows with the number of such temporaries even when only
    one is alive. A fixed threshold turns that off (measured: attention transfer over 24 layer pairs
    on SmolLM2, +1.5 GB peak RSS over CE-only with glibc's default, +0.02 to +0.5 GB with 4 MB;
    step time within noise). No-op off glibc.
    """
    if not megabytes:
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(_M_MMAP_THRESHOLD, int(float(megabytes) * 2**20))


def configure_process(cfg: DictConfig) -> None:
    """Thread count and allocator settings from the top-level config (every entry point)."""
    set_threads(cfg.get("threads"))
    set_malloc_mmap_threshold(cfg.get("malloc_mmap_threshold_mb"))


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


def start_run(cfg: DictConfig) -> Path:
    """Create the run directory, scrub secrets from Hydra's saved configs, configure the process
    (threads, allocator, precision). Settings that would only fail at the end fail here."""
    from distillab.config_schema import check_schema
    from distillab.evaluation.retention import primary_metrics  # late: config is imported everywhere

    check_schema(cfg)  # types and ranges of every key the schema names, before anything else
    primary_metrics(cfg.get("eval"))
    configure_precision(cfg)
    run_dir = Path(cfg.paths.run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    redact_saved_configs(run_dir)
    configure_process(cfg)
    return run_dir


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
    """Resolve ``precision`` (auto | bf16 | float32) once for the run and make it the process's.

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
    use(precision)
    logging.getLogger("distillab").info("precision: %s", precision.describe())
    return precision


def sweep_value(results: dict[str, Any] | None, metric: str | None) -> float | None:
    """What an app returns to Hydra's sweeper (Optuna maximises / minimises it).

    ``retention/mean``: mean retention over the eval suite; ``retention/<task>/<metric>``,
    ``eval/<task>/<metric>`` (the student's value), ``train/<key>`` (a final training metric).
    """
    if not results or not metric or "rank" in results:  # ranks > 0 of DDP/FSDP report nothing
        return None
    kind, _, key = metric.partition("/")
    retention = {k: v for k, v in (results.get("retention") or {}).items() if v is not None}
    if metric == "retention/mean":  # over each task's primary metric (evaluation/retention.py)
        mean = results.get("retention_mean")
        return None if mean is None else mean["value"]
    source = {
        "retention": retention,
        "eval": results.get("student") or {},
        "train": results.get("train_metrics") or {},
    }
    if kind not in source:
        raise DistillabError(
            f"sweep_metric: {metric!r}; valid: retention/mean, retention/<task>/<metric>, eval/..., train/..."
        )
    value = source[kind].get(metric if kind in ("train", "val") else key)
    if value is None:
        raise DistillabError(
            f"sweep_metric: {metric!r} was not measured; measured: {', '.join(sorted(source[kind]))}"
        )
    return float(value)


def _job_dir_in_multirun() -> Path | None:
    """The job's output directory when running as one job of a Hydra multirun, else None."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra_cfg = HydraConfig.get()
    except (ImportError, ValueError):
        return None
    return Path(hydra_cfg.runtime.output_dir) if hydra_cfg.mode == RunMode.MULTIRUN else None


def record_failure(job_dir: Path, err: BaseException) -> None:
    """``failure.json`` in the job's directory: what the sweep summary reports for a failed job."""

    message = (str(err).strip().splitlines() or [""])[0]
    write_json_atomic(job_dir / "failure.json", {"error": type(err).__name__, "message": message})


def user_errors_exit(fn: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Turn a :class:`DistillabError` into one line on stderr and exit status 2 — no traceback.

    In a multirun, a failing job (any exception) is recorded in its ``failure.json`` and the sweep
    goes on; :class:`distillab.sweep_failures.FailureReport` lists the failures and exits non-zero
    once every job has run.
    """

    @functools.wraps(fn)
    def wrapper(cfg: DictConfig) -> Any:
        job_dir = _job_dir_in_multirun()
        if job_dir is not None:  # a re-run of the same sweep directory: forget the earlier failure
            (job_dir / "failure.json").unlink(missing_ok=True)
        try:
            return fn(cfg)
        except Exception as err:
            if job_dir is not None:
                logging.getLogger("distillab").error("job failed: %s", err, exc_info=True)
                record_failure(job_dir, err)
                return None
            if not isinstance(err, DistillabError):
                raise
            logging.getLogger("distillab").debug("user error", exc_info=True)
            print(f"error: {err}", file=sys.stderr)
            sys.stdout.flush()
            sys.exit(2)

    return wrapper
