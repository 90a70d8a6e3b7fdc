"""The docs cannot drift: every command they show composes, every config key is described, and the
generated pages are what the generators produce now."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf, open_dict

from distillab.config import CONFIG_DIR
from distillab.config_schema import check_schema
from distillab.dashboard import build_parser as dashboard_parser
from distillab.dashboard import task_metrics
from distillab.docsgen import __main__ as docsgen
from distillab.docsgen import config_reference, troubleshooting
from distillab.docsgen.commands import all_commands, parse_line
from distillab.docsgen.results_pages import rewrite_links, site_path
from distillab.entry import check_group_choices
from distillab.evaluation.retention import primary_metrics
from distillab.models.fetch import OFFLINE_MODELS
from distillab.models.fetch import build_parser as models_parser
from distillab.report import build_parser as report_parser

REPO = Path(CONFIG_DIR).parent
COMMANDS = all_commands(REPO)
HYDRA_APPS = {"distill", "prune", "quantize", "pipeline", "evaluate", "generate"}
FLAGS_WITH_VALUE = {"--cfg", "-c", "--info", "-i", "--package", "-p", "--config-name", "-cn"}
FLAGS = {"-m", "--multirun", "--help", "-h", "--hydra-help", "--resolve"}


def _makefile_targets() -> dict[str, str]:
    """``{target: its recipe}`` of the Makefile."""
    targets, current = {}, None
    for line in (REPO / "Makefile").read_text().splitlines():
        match = re.match(r"^([a-zA-Z0-9_-]+):(?!=)", line)
        if match:
            current = match.group(1)
            targets[current] = ""
        elif current and line.startswith("\t"):
            targets[current] += line + "\n"
    return targets


MAKE_TARGETS = _makefile_targets()


def _overrides(args: tuple[str, ...]) -> list[str]:
    found, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in FLAGS_WITH_VALUE:
            skip = True
        elif arg not in FLAGS:
            found.append(re.sub(r"<[^>]*>", "placeholder", arg))
    return found


def _variants(overrides: list[str]) -> list[list[str]]:
    """A sweep (``a=1,2``) composes once per value: every value of every swept key is checked."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    base = []
    sweeps = []
    for override, text in zip(parsed, overrides, strict=True):
        key = text.split("=", 1)[0]
        if override.is_sweep_override():
            values = list(override.sweep_string_iterator())
            base.append(f"{key}={values[0]}")
            sweeps.append((len(base) - 1, key, values[1:]))
        else:
            base.append(text)
    variants = [base]
    for index, key, values in sweeps:
        for value in values:
            variant = list(base)
            variant[index] = f"{key}={value}"
            variants.append(variant)
    return variants


def check_hydra_command(app: str, args: tuple[str, ...], capsys) -> None:
    overrides = _overrides(args)
    try:
        check_group_choices(overrides)
    except SystemExit:
        pytest.fail(capsys.readouterr().err.strip())
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        for variant in _variants(overrides):
            cfg = compose(config_name=app, overrides=variant, return_hydra_config=True)
            with open_dict(cfg):  # ${hydra:...} resolves only inside a running app
                cfg.pop("hydra")
                if "paths" in cfg:
                    cfg.paths.run_dir = "/tmp/distillab-docs-check"
            OmegaConf.resolve(cfg)  # every interpolation of the composed config resolves
            check_schema(cfg)
            primary_metrics(cfg.get("eval"))


def check_make_command(args: tuple[str, ...], capsys) -> None:
    settings = dict(a.split("=", 1) for a in args if "=" in a)
    targets = [a for a in args if "=" not in a and not a.startswith("-")]
    assert targets, "make without a target"
    for target in targets:
        assert target in MAKE_TARGETS, f"no make target {target!r}"
    for name in settings.get("ARMS", "").split():
        assert list((REPO / "conf" / "experiment").glob(f"*/{name}.yaml")), f"no study arm {name!r}"
    if "ARGS" in settings:
        app = re.search(r"distillab-([a-z]+) \$\(ARGS\)", MAKE_TARGETS[targets[-1]])
        if app and app.group(1) in HYDRA_APPS:  # ARGS are that app's overrides
            check_hydra_command(app.group(1), tuple(shlex.split(settings["ARGS"])), capsys)


@pytest.mark.parametrize("command", COMMANDS, ids=[c.source for c in COMMANDS])
def test_every_documented_command_composes(command, capsys):
    """Hydra composes every command of the README and the docs with its overrides (nothing runs)."""
    program = command.program
    if program == "make":
        check_make_command(command.args, capsys)
    elif program.removeprefix("distillab-") in HYDRA_APPS:
        check_hydra_command(program.removeprefix("distillab-"), command.args, capsys)
    elif program == "distillab-report":
        args = [re.sub(r"<[^>]*>", "placeholder", a) for a in command.args]
        if args != ["--help"]:
            report_parser().parse_args(args)
    elif program == "distillab-dashboard":  # the arguments parse and the suite or tasks exist
        task_metrics(dashboard_parser().parse_args(command.args))
    elif program == "distillab-models":
        names = models_parser().parse_args([a for a in command.args if a != "--help"]).names
        assert set(names) <= set(OFFLINE_MODELS), names
    else:
        pytest.fail(f"{command.source}: unknown program {program}")


def test_the_readme_and_docs_show_commands():
    sources = {c.source.split(":")[0] for c in COMMANDS}
    assert "README.md" in sources and "docs/first-comparison.md" in sources
    assert len(COMMANDS) >= 40


def test_command_lines_are_read_as_a_reader_would():
    assert parse_line("OMP_NUM_THREADS=2 .venv/bin/distillab-distill a=1  # note") == (
        "distillab-distill",
        ("a=1",),
    )
    assert parse_line('make demo ARGS="x=1 y=2"') == ("make", ("demo", "ARGS=x=1 y=2"))
    assert parse_line("python bench/kd_step.py") is None


def test_a_wrong_documented_command_fails(capsys):
    with pytest.raises(BaseException):  # noqa: B017 - a composition error or a failed check
        check_hydra_command("distill", ("objective=nope",), capsys)
    with pytest.raises(BaseException):  # noqa: B017
        check_hydra_command("distill", ("student.num_remov=3",), capsys)
    with pytest.raises(AssertionError):
        check_make_command(("demoo",), capsys)


def test_every_config_key_is_described():
    missing = config_reference.missing_descriptions()
    assert not missing, (
        f"{len(missing)} keys without a description (a comment beside the key): {missing[:20]}"
    )


def test_generated_pages_are_current():
    """`python -m distillab.docsgen` rewrites them; a change to a config or the catalogue must too."""
    for path, render in docsgen.PAGES.items():
        assert path.read_text() == render(), (
            f"{path.relative_to(REPO)} is stale: run python -m distillab.docsgen"
        )


def test_troubleshooting_lists_every_catalogue_case():
    from bad_input_cases import CATALOGUE

    assert sum(len(cases) for _, cases in troubleshooting.sections()) == len(CATALOGUE)


def test_results_links_point_at_site_pages():
    assert site_path("experiments/007-claims/") == "results/007-claims.md"
    assert site_path("experiments/007-claims/runs/x/results.json") is None
    text = "[004](../004-healing-budget/#a) [notes](NOTES.md) ![p](retention.png) [csv](runs/a.csv) [x](https://x.org)"
    out = rewrite_links(text, "experiments/007-claims/README.md", "results/007-claims.md")
    assert "[004](004-healing-budget.md#a)" in out and "[notes](007-claims/NOTES.md)" in out
    assert "![p](007-claims/retention.png)" in out and "`experiments/007-claims/runs/a.csv`" in out
    assert "[x](https://x.org)" in out


def test_no_issue_numbers_in_readme_or_docs():
    """The README and the docs speak to users: no `#13`-style references to the issue tracker."""
    from distillab.docsgen.commands import documented_files

    found = [
        f"{path.relative_to(REPO)}:{n}: {line.strip()[:80]}"
        for path in documented_files(REPO)
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"(?<![\w&/])#\d{1,3}\b|\bissues? #?\d+\b", line)
    ]
    assert not found, "\n".join(found)


def test_readme_is_short_and_starts_with_the_two_commands():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 200
    head = "\n".join(lines[:40])
    assert "make demo" in head and "make test" in head
