"""The sweep summary collects run directories into one table."""

from __future__ import annotations

import json

import pytest

from distillab.tracking.summarize import find_runs, main, summary_table


def _fake_run(root, name, ppl, overrides):
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("\n".join(f"- {o}" for o in overrides) + "\n")
    (run / "results.json").write_text(
        json.dumps(
            {
                "teacher": {"wikitext2/ppl": 36.0},
                "student": {"wikitext2/ppl": ppl},
                "retention": {"wikitext2/ppl": 36.0 / ppl},
                "params": {"teacher": 100, "student": 80},
            }
        )
    )
    return run


def test_summary_table_has_one_row_per_run_and_the_teacher(tmp_path, capsys):
    _fake_run(tmp_path, "0", 72.0, ["objective=ce"])
    _fake_run(tmp_path, "1", 48.0, ["objective=kd"])
    runs = find_runs([tmp_path])
    table = summary_table(runs, ["wikitext2/ppl"])
    assert "| objective=ce | 72 | 50.0% |" in table and "| objective=kd | 48 | 75.0% |" in table
    assert table.splitlines()[-1] == "| teacher | 36 | 100% |"
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "missing")])
    assert exit_info.value.code == 2 and "no results.json" in capsys.readouterr().err


def test_summary_plots_and_wandb_run_are_written(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the offline W&B run goes to ./outputs/summaries/wandb
    _fake_run(tmp_path / "sweep", "0", 72.0, ["objective=ce"])
    bars, scatter = tmp_path / "plots" / "retention.png", tmp_path / "plots" / "params.png"
    main(
        [
            str(tmp_path / "sweep"),
            "--metrics",
            "wikitext2/ppl",
            "--plot",
            str(bars),
            "--plot-params",
            str(scatter),
            "--wandb",
            "study",
        ]
    )
    for out in (bars, scatter):
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert printed.count("plot:") == 2 and "W&B files:" in printed
    assert list((tmp_path / "outputs" / "summaries" / "wandb").glob("offline-run-*"))
