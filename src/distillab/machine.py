"""What a run computed on: the CPU model, its cores and threads, the GPU if one was used.

Every published figure states its machine (a 2-core AVX2 CPU and a bf16-native one differ by 4× in
matmul throughput), so ``results.json`` carries this next to the precision and the report prints it.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (Linux's /proc/cpuinfo; elsewhere what :mod:`platform` knows)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def describe_machine(device_type: str = "cpu") -> dict[str, object]:
    """The machine of this process; ``device_type`` ``cuda`` adds the GPU it computes on."""
    machine: dict[str, object] = {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    if device_type == "cuda" and torch.cuda.is_available():
        machine["gpu"] = torch.cuda.get_device_name()
    return machine


def one_line(machine: dict | None) -> str:
    """``AMD EPYC, 2 logical CPUs (AVX2), 2 torch threads`` [``; GPU NVIDIA H200``], or '' when unknown."""
    if not machine:
        return ""
    text = (
        f"{machine.get('cpu', 'unknown CPU')}, {machine.get('logical_cpus', '?')} logical CPUs "
        f"({machine.get('cpu_capability', '?')}), {machine.get('torch_threads', '?')} torch threads"
    )
    return text + (f"; GPU {machine['gpu']}" if machine.get("gpu") else "")
