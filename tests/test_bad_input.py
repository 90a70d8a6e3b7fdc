"""User mistakes end in one line naming the key or file, a non-zero exit, and no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO, tiny_overrides

# The real CLI (a new interpreter costs ~10 s on 2 cores), once for each path a mistake takes: the
# command line checked before Hydra runs, and the app's own checks once it runs. Every other bad
# input is in the in-process catalogue (test_bad_input_catalogue.py, the same task functions).
CASES = [
    (
        ["model=tiny_llama", "model.name_or_path=/no/such/model"],
        "model.name_or_path: folder '/no/such/model' does not exist",
    ),
    (
        ["trainer.max_stesp=4"],
        "trainer.max_stesp: not a key of this config; to add it: +trainer.max_stesp=...",
    ),
]


@pytest.mark.parametrize("overrides,message", CASES, ids=["in the run", "before Hydra"])
def test_cli_reports_one_line_and_exits_nonzero(overrides, message, tmp_path, tiny_corpus):
    (tmp_path / "results.json").write_text("earlier results")
    args = [*tiny_overrides(tmp_path, tiny_corpus, "logger=csv", *overrides), f"hydra.run.dir={tmp_path}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "distillab.distill", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1 and message in error_lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert (tmp_path / "results.json").read_text() == "earlier results"  # earlier results untouched


def test_a_key_the_config_lacks_or_an_unreadable_override_is_one_line(capsys):
    from distillab.entry import check_overrides

    check_overrides("distill", ["eval=none", "+extra=1", "hydra.run.dir=/tmp/x", "~eval"])  # all fine
    check_overrides("distill", ["-m", "objective=kd,ce"])  # sweeps: Hydra's
    for argv, message in (
        (
            ["objective.terms.kd.tempreature=2"],
            "error: objective.terms.kd.tempreature: not a key of this config",
        ),
        (
            ["student.remove=[1"],
            "error: student.remove: cannot read 'student.remove=[1' (no viable alternative",
        ),
    ):
        with pytest.raises(SystemExit) as exit_info:
            check_overrides("distill", argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(message) and "\n" not in err


def test_an_unknown_group_option_is_one_line_naming_the_group_and_its_options(capsys):
    from distillab.entry import check_group_choices

    check_group_choices(["objective=kd", "model=tiny_llama", "hydra/launcher=submitit_local", "x.y=z"])
    check_group_choices(["objective=choice(kd,ce)", "objective=glob(*)", "-m", "objective=kd,ce"])  # sweeps
    for overrides, message in (
        (["objective=nope"], "error: objective: unknown 'nope'; valid: ce, cross_kd, distill_lens, ild, kd,"),
        (["-m", "objective=kd,nope"], "error: objective: unknown 'nope'"),
        (["model@teacher=gpt5"], "error: model@teacher: unknown 'gpt5'; valid: gemma3_270m,"),
        (["+quantize=bitsandbytes"], "error: quantize: unknown 'bitsandbytes'; valid: gguf, torchao"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            check_group_choices(overrides)
        assert exit_info.value.code == 2
        assert capsys.readouterr().err.strip().startswith(message)
