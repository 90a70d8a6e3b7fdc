"""What every app does around its ``run``: start it (checks, run folder, process settings) and turn
a user's mistake into one line and exit status 2. ``hydra_app`` builds each console script's main."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import hydra
from omegaconf import DictConfig

from distillab.config import CONFIG_DIR, configure_precision
from distillab.config_schema import check_schema
from distillab.errors import DistillabError
from distillab.evaluation.retention import primary_metrics
from distillab.precision import running
from distillab.process import configure_process
from distillab.redaction import redact_saved_configs
from distillab.sweeps import job_dir_in_multirun, record_failure, sweep_value

R = TypeVar("R")


def app_boundary(run: Callable[[DictConfig], R]) -> Callable[[DictConfig], R]:
    """Every app's ``run``: the config checked first (types and ranges of every key the schema names,
    the eval suite's metrics), then the whole run inside its resolved precision (``precision.running``),
    which every forward pass of a frozen model inside is checked against."""

    @functools.wraps(run)
    def wrapper(cfg: DictConfig) -> R:
        check_schema(cfg)
        primary_metrics(cfg.get("eval"))
        with running(configure_precision(cfg)):
            return run(cfg)

    return wrapper


def start_run(cfg: DictConfig) -> Path:
    """Create the run directory, scrub secrets from Hydra's saved configs, configure the process
    (threads, allocator). Settings that would only fail at the end fail here."""
    run_dir = Path(cfg.paths.run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    redact_saved_configs(run_dir)
    configure_process(cfg)
    return run_dir


def user_errors_exit(fn: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Turn a :class:`DistillabError` into one line on stderr and exit status 2 — no traceback.

    In a multirun, a failing job (any exception) is recorded in its ``failure.json`` and the sweep
    goes on; :class:`distillab.sweeps.FailureReport` lists the failures and exits non-zero
    once every job has run.
    """

    @functools.wraps(fn)
    def wrapper(cfg: DictConfig) -> Any:
        job_dir = job_dir_in_multirun()
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


def check_group_choices(overrides: list[str], config_dir: str = CONFIG_DIR) -> None:
    """``objective=nope``: one line naming the group and its options, exit 2 (Hydra itself prints a
    multi-line search-path report and exits 1). Sweeps (``a,b``) are checked option by option."""
    root = Path(config_dir)
    for override in overrides:
        key, sep, value = override.lstrip("+").partition("=")
        group = key.split("@", 1)[0]
        plugin_group = "/" in group  # hydra/launcher=submitit_local etc. come from installed plugins
        if not sep or override.startswith("~") or "." in group or plugin_group or not (root / group).is_dir():
            continue
        if any(c in value for c in "()[]{}$*"):  # choice(...), glob(...), interpolations: Hydra's to read
            continue
        options = sorted(p.stem for p in (root / group).glob("*.yaml") if not p.stem.startswith("_"))
        for choice in value.split(","):
            if choice not in ("null", "") and not (root / group / f"{choice}.yaml").is_file():
                print(f"error: {key}: unknown {choice!r}; valid: {', '.join(options)}", file=sys.stderr)
                sys.exit(2)


def check_overrides(config_name: str, argv: list[str], config_dir: str = CONFIG_DIR) -> None:
    """``foo.bar=1`` (a key the config lacks) or an override Hydra cannot parse: one line naming the
    key, exit 2, instead of Hydra's multi-line report and exit 1. The config is composed once here,
    as the app will compose it; sweeps (``-m``, ``a,b``) and Hydra's own flags are left to Hydra."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException, OverrideParseException

    overrides = [a for a in argv if not a.startswith("-")]
    if len(overrides) != len(argv) or any("," in a.partition("=")[2] for a in overrides):
        return  # flags (-m, --cfg, ...) and sweeps: Hydra's to handle
    parser = OverridesParser.create()
    for override in overrides:
        try:
            parser.parse_overrides([override])
        except OverrideParseException as err:
            reason = str(err).splitlines()[0].split(" See https://")[0]
            print(
                f"error: {override.partition('=')[0]}: cannot read {override!r} ({reason})", file=sys.stderr
            )
            sys.exit(2)
    try:
        with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
            compose(config_name, overrides=overrides)
    except HydraException as err:
        print(f"error: {one_line_override_error(err)}", file=sys.stderr)
        sys.exit(2)


def one_line_override_error(err: Exception) -> str:
    """Hydra's report of a bad override, as one line starting with the key."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    first = lines[0] if lines else type(err).__name__
    if first.startswith("Could not override '"):
        key = first.split("'")[1]
        cause = str(err.__cause__ or "").splitlines()[0] if err.__cause__ else ""
        hint = (
            f"; to add it: +{key}=..." if "not in struct" in cause or "is not in struct" in str(err) else ""
        )
        return f"{key}: not a key of this config{hint}" if hint else f"{key}: {cause or first}"
    return " ".join(lines)[:300]


def hydra_app(config_name: str, run: Callable[[DictConfig], Any]) -> Callable[[], Any]:
    """The console script of an app: Hydra composes ``conf/<config_name>.yaml`` and the command
    line, ``run`` runs, and a Hydra sweeper (Optuna) gets the config's ``sweep_metric``."""

    @hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name=config_name)
    @user_errors_exit
    def hydra_main(cfg: DictConfig) -> float | None:
        return sweep_value(run(cfg), cfg.get("sweep_metric"))

    def main() -> Any:
        check_group_choices(sys.argv[1:])
        check_overrides(config_name, sys.argv[1:])
        return hydra_main()

    main.__wrapped__ = hydra_main.__wrapped__  # the app on a composed config (tests; Hydra's passthrough)
    return main
