"""The machine a run computed on, kept in results.json and printed by the report."""

from __future__ import annotations

import json

import torch

from distillab.machine import cpu_model, describe_machine, one_line


def test_cpu_model_reads_the_model_name_line(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9B14\nflags\t: avx2\n"
    )
    assert cpu_model(cpuinfo) == "AMD EPYC 9B14"
    assert cpu_model(tmp_path / "missing")  # elsewhere: platform's answer, never empty


def test_describe_machine_reports_this_process_threads_and_one_line_says_it():
    machine = describe_machine("cpu")
    assert machine["torch_threads"] == torch.get_num_threads()
    assert "gpu" not in machine
    line = one_line(machine)
    assert line.startswith(str(machine["cpu"])) and f"{torch.get_num_threads()} torch threads" in line
    assert one_line({**machine, "gpu": "NVIDIA H200"}).endswith("; GPU NVIDIA H200")
    assert one_line(None) == ""


def test_results_and_the_comparison_say_the_machine(tmp_path):
    from distillab.tracking.report import write_results

    for name in ("a", "b"):
        write_results(tmp_path / name, {"primary": ["wiki/ppl"], "student": {}}, [], "")
    results = json.loads((tmp_path / "a" / "results.json").read_text())
    assert results["machine"]["torch_threads"] == torch.get_num_threads()
    assert f"machine: {one_line(results['machine'])}" in (tmp_path / "a" / "retention.md").read_text()
    # The comparison's header says it once for runs that share it.
    from distillab.tracking.run_diff import markdown

    text = markdown([], [tmp_path / "a"], [tmp_path / "b"])
    assert text.count("computed on: float32 on ") == 1 and one_line(results["machine"]) in text
    # When the two sides differ (here: B in bf16), each side says its own.
    b = json.loads((tmp_path / "b" / "results.json").read_text())
    b["precision"] = {**(b.get("precision") or {}), "name": "bf16"}
    (tmp_path / "b" / "results.json").write_text(json.dumps(b))
    text = markdown([], [tmp_path / "a"], [tmp_path / "b"])
    assert "A computed on: float32 on " in text and "B computed on: bf16 on " in text
