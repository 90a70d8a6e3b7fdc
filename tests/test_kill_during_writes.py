"""kill -9 at the worst moment of each write outside training — the export, the GGUF file, an
evaluation result, the teacher cache — leaves earlier results intact, and the rerun completes.

The worst moment is just before a finished temporary file or folder is renamed into place: every
byte is written, nothing is published. A ``sitecustomize`` on the child's path sends SIGKILL to
the process at the first ``os.replace``/``os.rename`` whose destination contains a given text
(the same kill -9 as a user's, at a chosen point instead of a random one).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import compose_config, tiny_overrides

from distillab import distill, quantize

REPO = Path(__file__).resolve().parents[1]
APPS = {"distill": distill, "quantize": quantize}

SITECUSTOMIZE = """
import os, signal
_target = os.environ.get("DISTILLAB_TEST_KILL_BEFORE_RENAME")
if _target:
    def _killing(original):
        def rename(src, dst, *args, **kwargs):
            if _target in os.fspath(dst):
                os.kill(os.getpid(), signal.SIGKILL)
            return original(src, dst, *args, **kwargs)
        return rename
    os.replace, os.rename = _killing(os.replace), _killing(os.rename)
"""


def _quantize_overrides(run_dir: Path, data_dir: Path) -> list[str]:
    return [
        f"paths.run_dir={run_dir}",
        f"paths.data_dir={data_dir}",
        "model=tiny_llama",
        "quantize.pre_tokenizer=default",
        "eval=none",
        "logger=csv",
        "threads=1",
    ]


# (what is being written, app, extra overrides, text in the destination at which the process dies)
CASES = [
    ("export", "distill", ["export=true"], "/student"),
    (
        "evaluation cache",
        "distill",
        [
            "eval=demo",
            "eval.tasks.arc_challenge_margin.limit=2",
            "eval.tasks.gsm8k_bpb.limit=1",
            "eval.perplexity.wikitext2.max_tokens=256",
        ],
        "/eval/",
    ),
    (
        "teacher cache",
        "distill",
        ["objective=kd_cached", "teacher_cache.enabled=true", "teacher_cache.k=8"],
        "manifest.json",
    ),
    ("GGUF file", "quantize", [], ".gguf"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_kill_9_while_publishing_keeps_earlier_results_and_the_rerun_completes(
    case, tmp_path, tiny_corpus, monkeypatch
):
    _, app, extra, target = case
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    earlier = json.dumps({"earlier": True})
    (run_dir / "results.json").write_text(earlier)
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    base = (
        tiny_overrides(run_dir, tiny_corpus, "logger=csv", *extra)
        if app == "distill"
        else [*_quantize_overrides(run_dir, tiny_corpus), *extra]
    )
    command = [sys.executable, "-m", f"distillab.{app}", *base, f"hydra.run.dir={run_dir}"]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(hooks), os.environ.get("PYTHONPATH", "")]),
        "DISTILLAB_TEST_KILL_BEFORE_RENAME": target,
        # a cache of its own: an entry another test already published (the teacher cache of the
        # same tiny teacher and corpus) would never be written here, so the process would not die
        "DISTILLAB_CACHE_DIR": str(tmp_path / "cache"),
    }
    killed = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert killed.returncode == -9, f"the process was not killed at {target!r}:\n{killed.stderr[-2000:]}"
    assert (run_dir / "results.json").read_text() == earlier  # nothing earlier lost or half-replaced

    # the rerun in process (the same code; a second interpreter would cost ~10 s per case)
    monkeypatch.setenv("DISTILLAB_CACHE_DIR", env["DISTILLAB_CACHE_DIR"])
    APPS[app].run(compose_config(base, app))
    results = json.loads((run_dir / "results.json").read_text())
    assert "earlier" not in results
    if target == "/student":
        assert (run_dir / "student" / "config.json").is_file()
        assert not list(run_dir.glob("student.partial*")) and not list(run_dir.glob("student.old*"))
