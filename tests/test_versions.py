"""Which code and library versions computed a run: kept in results.json, shown by the comparison."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess

import pytest
from conftest import REPO

from distillab import versions
from distillab.tracking.report import write_results
from distillab.tracking.run_diff import markdown
from distillab.versions import code_line, code_revision, library_versions


def load_copy(path):
    """versions.py loaded from ``path``, so its ``__file__`` (what it looks up in git) is there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(versions.__file__, path)
    spec = importlib.util.spec_from_file_location("versions_copy", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def git(repo, *args) -> str:
    command = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_the_commit_of_a_checkout_and_whether_its_code_changed(tmp_path):
    repo = tmp_path / "repo"
    copy = load_copy(repo / "src" / "distillab" / "versions.py")
    (repo / "conf").mkdir()
    (repo / "conf" / "a.yaml").write_text("a: 1\n")
    (repo / "notes.md").write_text("not code\n")
    git(repo, "init", "-q")
    assert copy.code_revision() is None  # no commit yet
    git(repo, "add", "src", "conf")
    git(repo, "commit", "-qm", "one")
    head = git(repo, "rev-parse", "HEAD")
    assert copy.code_revision() == {"commit": head, "dirty": False}  # an untracked notes.md is not code
    (repo / "conf" / "a.yaml").write_text("a: 2\n")
    assert copy.code_revision() == {"commit": head, "dirty": True}
    assert code_line(copy.code_revision()) == f"{head[:7]} + uncommitted changes"
    # a copy installed somewhere inside a checkout (a virtualenv in it) is not that checkout's code
    assert load_copy(repo / ".venv" / "site-packages" / "distillab" / "versions.py").code_revision() is None
    assert load_copy(tmp_path / "elsewhere" / "distillab" / "versions.py").code_revision() is None
    assert code_line(None) == "not a git checkout"


def test_results_record_the_versions_and_the_code(tmp_path):
    write_results(tmp_path, {"primary": ["wiki/ppl"], "student": {}}, [], "")
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["versions"] == library_versions() and "torch" in results["versions"]
    assert results["code"] == code_revision()
    assert f"; code: {code_line(results['code'])}" in (tmp_path / "retention.md").read_text()
    if (REPO / ".git").exists() and shutil.which("git"):  # the tests run from a checkout
        assert results["code"]["commit"] == git(REPO, "rev-parse", "HEAD")


def test_the_comparison_names_the_code_and_libraries_that_differ(tmp_path):
    for name in ("a", "b"):
        write_results(tmp_path / name, {"primary": ["wiki/ppl"], "student": {}}, [], "")
    shared = markdown([], [tmp_path / "a"], [tmp_path / "b"])
    assert (
        shared.count(f"code: {code_line(code_revision())}") == 1 and "library versions differ" not in shared
    )
    b = json.loads((tmp_path / "b" / "results.json").read_text())
    b["code"] = {"commit": "f" * 40, "dirty": False}
    b["versions"] = {**b["versions"], "torch": "1.0"}
    (tmp_path / "b" / "results.json").write_text(json.dumps(b))
    text = markdown([], [tmp_path / "a"], [tmp_path / "b"])
    assert f"A code: {code_line(code_revision())}" in text and "B code: fffffff" in text
    torch_now = library_versions()["torch"]
    assert (
        f"library versions differ: {tmp_path / 'b'} against {tmp_path / 'a'}: torch {torch_now} -> 1.0"
        in text
    )
